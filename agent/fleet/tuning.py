"""``agent tune`` in the fleet report.

Tuning points (``results.tuning`` set, schema 1.2) never enter the normal ranking
(``data`` keeps to ``tuning IS NULL``); this module reads them on their own. For every
node × model × backend, the newest tuning run (by effective time, as ``data.EFFECTIVE_AT``)
gives the curve of the points it tried (throughput against p99, one point per
configuration × concurrency), the chosen configuration (``tuning_chosen``) and the
untuned default (the best point of the ``default`` configuration within the budget), each
with its cost per million inferences at the node's price. Per GPU type and model: the
configuration most nodes chose, the medians of chosen and default throughput and their
ratio. The figure per model draws each node's points (throughput against p99, the
chosen point ringed, the default's as a square, the budget as a dashed line), inline SVG
like :mod:`agent.fleet.plots`."""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from html import escape

from sqlalchemy import text

TUNING_SQL = """
SELECT res.node_name, COALESCE(ru.gpu_name, 'cpu'), ru.price_per_hour, res.model,
       CASE WHEN ru.target = 'triton' THEN 'triton-' || res.format ELSE res.format END,
       res.precision, res.batch_size, res.concurrency, res.throughput_ips, res.p99_ms, res.tuning,
       res.tuning_chosen, res.run_id,
       CASE WHEN res.created_at > ru.received_at THEN ru.received_at ELSE res.created_at END
FROM results res JOIN runs ru ON ru.id = res.run_id
WHERE res.tuning IS NOT NULL{where}
"""


@dataclass(slots=True)
class TuningPointRow:
    concurrency: int
    throughput_ips: float
    p99_ms: float
    config: str  # e.g. "2 inst, max batch 8, dyn batching 500us"
    search: str  # quick | brute
    default: bool  # a point of the untuned default configuration
    within_budget: bool
    chosen: bool


@dataclass
class NodeTuning:
    node: str
    gpu: str
    model: str
    backend: str
    precision: str
    batch_size: int
    run_id: str
    created_at: datetime
    search: str
    objective: str
    p99_budget_ms: float
    price_per_hour: float | None
    points: list[TuningPointRow] = field(default_factory=list)
    chosen: TuningPointRow | None = None
    default: TuningPointRow | None = None  # the default's best point within budget

    @property
    def ratio(self) -> float | None:
        if self.chosen is None or self.default is None or self.default.throughput_ips <= 0:
            return None
        return self.chosen.throughput_ips / self.default.throughput_ips

    def cost(self, p: TuningPointRow | None) -> float | None:
        from agent.fleet.data import cost_per_million

        return None if p is None else cost_per_million(self.price_per_hour, p.throughput_ips)

    @property
    def chosen_cost(self) -> float | None:
        return self.cost(self.chosen)

    @property
    def default_cost(self) -> float | None:
        return self.cost(self.default)


@dataclass
class TuningTables:
    nodes: list[NodeTuning]  # by model, GPU, node, backend
    by_gpu: list[dict]  # per model × GPU × backend: most chosen configuration, medians


def label(t: dict) -> str:
    """A stored tuning point's configuration, in the words ``agent tune`` prints."""
    from agent.tune.search import config_label

    return config_label(t["instances"], t["max_batch_size"], t["queue_delay_us"] if t.get("dynamic_batching") else None,
                        t.get("preferred_batch_sizes") or ())


def tuning_tables(conn, since: datetime | None = None) -> TuningTables:
    params = {}
    where = ""
    if since is not None:
        where = " AND ru.received_at >= :since AND res.created_at >= :since"
        params["since"] = since
    runs: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    newest: dict[tuple, tuple] = {}
    for row in conn.execute(text(TUNING_SQL.format(where=where)), params):
        node, model, backend, prec, bs, rid, eff = row[0], row[3], row[4], row[5], row[6], row[12], row[13]
        key = (node, model, backend, prec, bs)
        runs[key][rid].append(row)
        if key not in newest or (eff, rid) > newest[key]:
            newest[key] = (eff, rid)
    out = []
    for key, (eff, rid) in newest.items():
        rows = runs[key][rid]
        node, gpu, price, model, backend, prec, bs = rows[0][0], rows[0][1], rows[0][2], *key[1:]
        nt = None
        for r in rows:
            t = json.loads(r[10])
            if nt is None:
                nt = NodeTuning(node=node, gpu=gpu, model=model, backend=backend, precision=prec, batch_size=bs,
                                run_id=rid, created_at=eff, search="", objective=t.get("objective", "throughput"),
                                p99_budget_ms=t["p99_budget_ms"], price_per_hour=price)
            p = TuningPointRow(concurrency=r[7], throughput_ips=r[8], p99_ms=r[9], config=label(t),
                               search=t["search"], default=bool(t.get("default")),
                               within_budget=bool(t.get("within_budget")), chosen=bool(r[11]))
            nt.search = p.search
            nt.points.append(p)
            if p.chosen:
                nt.chosen = p
            if p.default and p.within_budget and (
                    nt.default is None or p.throughput_ips > nt.default.throughput_ips):
                nt.default = p
        nt.points.sort(key=lambda p: (p.p99_ms, p.throughput_ips))
        out.append(nt)
    out.sort(key=lambda n: (n.model, n.gpu, n.node, n.backend, n.precision, n.batch_size))
    return TuningTables(nodes=out, by_gpu=_by_gpu(out))


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _by_gpu(nodes: list[NodeTuning]) -> list[dict]:
    groups: dict[tuple, list[NodeTuning]] = defaultdict(list)
    for n in nodes:
        groups[(n.model, n.gpu, n.backend, n.precision, n.batch_size)].append(n)
    out = []
    for (model, gpu, backend, prec, bs), ns in sorted(groups.items()):
        chosen = [n for n in ns if n.chosen is not None]
        configs = Counter(n.chosen.config for n in chosen)
        top = configs.most_common(1)[0] if configs else None
        out.append({
            "model": model, "gpu": gpu, "backend": backend, "precision": prec, "batch_size": bs,
            "nodes": len(ns), "budget_ms": _median([n.p99_budget_ms for n in ns]),
            "config": top[0] if top else None, "config_nodes": top[1] if top else 0,
            "chosen_ips": _median([n.chosen.throughput_ips for n in chosen]),
            "default_ips": _median([n.default.throughput_ips for n in ns if n.default]),
            "ratio": _median([r for n in ns if (r := n.ratio) is not None]),
            "chosen_cost": _median([c for n in ns if (c := n.chosen_cost) is not None]),
            "default_cost": _median([c for n in ns if (c := n.default_cost) is not None]),
        })
    return out


# ---------------------------------------------------------------------- figure
MAX_FIGURE_NODES = 10


def figure(model: str, nodes: list[NodeTuning]) -> str | None:
    """Throughput against p99 of every point each node's search tried (inline SVG)."""
    from agent.fleet.plots import COLORS, _label, _nice_ticks

    nodes = [n for n in nodes if n.points][:MAX_FIGURE_NODES]
    if not nodes:
        return None
    w, h, left, top = 560.0, 260.0, 60.0, 34.0
    budget = max(n.p99_budget_ms for n in nodes)
    xs = _nice_ticks(max([p.p99_ms for n in nodes for p in n.points] + [budget]) * 1.05)
    ys = _nice_ticks(max(p.throughput_ips for n in nodes for p in n.points) * 1.05)

    def sx(v: float) -> float:
        return left + v / (xs[-1] or 1.0) * w

    def sy(v: float) -> float:
        return top + h - v / (ys[-1] or 1.0) * h

    title = f"{model} — agent tune: throughput against p99 of every configuration tried"
    out = [(f'<svg class="figure" role="img" width="900" height="{top + h + 50:.0f}" '
            f'viewBox="0 0 900 {top + h + 50:.0f}" font-family="sans-serif" font-size="10">'),
           f'<title>{escape(title)}</title>',
           f'<text x="{left + w / 2}" y="16" text-anchor="middle" font-size="12">{escape(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#888"/>']
    for t in ys:
        out.append(f'<line x1="{left}" y1="{sy(t):.1f}" x2="{left + w}" y2="{sy(t):.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 4}" y="{sy(t) + 3:.1f}" text-anchor="end">{_label(t)}</text>')
    for t in xs:
        out.append(f'<text x="{sx(t):.1f}" y="{top + h + 13}" text-anchor="middle">{_label(t)}</text>')
    out.append(f'<text x="{left + w / 2}" y="{top + h + 28}" text-anchor="middle">p99 latency (ms)</text>'
               f'<text transform="translate(14,{top + h / 2}) rotate(-90)" text-anchor="middle">'
               f'throughput (inferences/s)</text>')
    for n in nodes:
        x = sx(n.p99_budget_ms)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + h}" stroke="#d62728" '
                   f'stroke-dasharray="6 3"/>')
    out.append(f'<text x="{sx(budget) + 3:.1f}" y="{top + 10}" fill="#d62728">p99 budget</text>')
    y = top + 6
    for i, n in enumerate(nodes):
        color = COLORS[i % len(COLORS)]
        for p in n.points:
            cx, cy = sx(p.p99_ms), sy(p.throughput_ips)
            tip = escape(f"{n.node}: {p.config}, concurrency {p.concurrency}: {p.throughput_ips:.1f} inf/s, "
                         f"p99 {p.p99_ms:.1f} ms")
            if p.default:
                out.append(f'<rect x="{cx - 3:.1f}" y="{cy - 3:.1f}" width="6" height="6" fill="none" '
                           f'stroke="{color}"><title>{tip} (default)</title></rect>')
            else:
                out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="2.5" fill="{color}"><title>{tip}</title></circle>')
            if p.chosen:
                out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="7" fill="none" stroke="{color}" '
                           f'stroke-width="2"/>')
        out.append(f'<circle cx="{left + w + 20}" cy="{y}" r="3" fill="{color}"/>'
                   f'<text x="{left + w + 28}" y="{y + 3}">{escape(f"{n.node} ({n.gpu}, {n.backend})")}</text>')
        y += 15
    out.append(f'<text x="{left + w + 20}" y="{y + 8}">○ chosen  □ default  ● tried</text>')
    out.append("</svg>")
    return "".join(out)


def context(tables: TuningTables | None, with_plots: bool) -> list[dict]:
    """Per model: its GPU summary, its nodes and (HTML) its figure."""
    if tables is None or not tables.nodes:
        return []
    from markupsafe import Markup

    by_model: dict[str, list[NodeTuning]] = defaultdict(list)
    for n in tables.nodes:
        by_model[n.model].append(n)
    out = []
    for m, ns in sorted(by_model.items()):
        svg = figure(m, ns) if with_plots else None
        out.append({"name": m, "nodes": ns, "by_gpu": [g for g in tables.by_gpu if g["model"] == m],
                    "figure": Markup(svg) if svg else None})  # every text escaped in figure()
    return out
