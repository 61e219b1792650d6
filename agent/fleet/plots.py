"""Figures for the HTML report: inline SVG, written here as text, so the page
opens offline and stays sharp at any zoom.

One figure per model (throughput and p99 latency against batch size), drawn
from the per-GPU summary (medians over nodes, ``model_series_from_summary``),
never from the rows one by one: a figure costs about a millisecond whatever
the fleet's size. (They used
to be matplotlib PNGs drawn in a process pool — a third of a second of CPU per
figure plus a matplotlib import per worker, the larger part of the report's
time.) Every text in a figure (GPU, node and backend names come from the
documents) is XML-escaped; the markup has no script, no link and no external
reference."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from html import escape

from agent.fleet.data import Row, Rows, as_tuples

BACKEND_DASH = {"eager": "", "torchscript": "6 3", "onnx": "8 3 2 3", "tensorrt": "2 3"}
OTHER_DASHES = ("10 4", "4 2 1 2", "1 2", "12 3 3 3")
MAX_NODE_GROUPS = 6
# matplotlib's tab10: the colours people already know from the PNG figures
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
          "#bcbd22", "#17becf")


def model_series_from_groups(model: str, groups: dict[tuple, list[tuple]],
                             medians: dict[tuple, tuple] | None = None) -> dict | None:
    """Throughput and p99 against batch size, one line per node (up to
    MAX_NODE_GROUPS nodes) or per GPU (medians over its nodes) and backend, at
    the lowest concurrency measured. ``groups``: (GPU, backend, precision, batch,
    concurrency) -> Row-ordered tuples of one model;
    ``medians``: the same key -> (median throughput, median p99) where already
    computed (the per-GPU summary), used for a point made of one group only."""
    if not groups:
        return None
    conc = min(k[4] for k in groups)
    sel = {k: ts for k, ts in groups.items() if k[4] == conc}
    # a group holds one result per node: one larger than MAX_NODE_GROUPS settles it
    by_node = all(len(ts) <= MAX_NODE_GROUPS for ts in sel.values()) and \
        len({t[0] for ts in sel.values() for t in ts}) <= MAX_NODE_GROUPS
    points: dict[tuple[str, str], dict[int, list[tuple]]] = defaultdict(lambda: defaultdict(list))
    parts: dict[tuple[str, str, int], list[tuple]] = defaultdict(list)  # the groups behind each point
    for key, ts in sel.items():
        gpu, backend, _precision, bs, _conc = key
        if by_node:
            for t in ts:
                points[(f"{t[0]} ({t[1]})", backend)][bs].append(t)
        else:
            points[(gpu, backend)][bs].extend(ts)
            parts[(gpu, backend, bs)].append(key)
    lines = []
    for (group, backend), by_batch in sorted(points.items()):
        xs = sorted(by_batch)
        meds = []
        for x in xs:
            keys = parts.get((group, backend, x), ())
            if medians is not None and len(keys) == 1 and keys[0] in medians:
                meds.append(medians[keys[0]])
            else:
                meds.append((statistics.median(t[9] for t in by_batch[x]),
                             statistics.median(t[11] for t in by_batch[x])))
        lines.append((group, backend, xs, [m[0] for m in meds], [m[1] for m in meds]))
    who = "node" if by_node else "GPU (median over nodes)"
    return {"title": f"{model} — by {who} and backend, concurrency {conc}", "lines": lines,
            "batches": sorted({k[3] for k in sel})}


def model_series_from_summary(model: str, groups: dict[tuple, tuple[int, float, float]],
                              fetch: Callable[..., list[tuple]]) -> dict | None:
    """``model_series`` from the per-GPU summary, without reading every row:
    ``groups``: (GPU, backend, precision, batch, concurrency) -> (nodes, median
    throughput, median p99) of one model; ``fetch(concurrency, gpu=, backend=, bs=)``
    reads Row-ordered tuples. Where every group at the lowest concurrency has at most
    MAX_NODE_GROUPS nodes (a line per node is possible) those rows are read and drawn
    as ``model_series`` draws them; otherwise each point is its group's medians, and
    only a point that spans several precisions reads its rows for their median."""
    if not groups:
        return None
    conc = min(k[4] for k in groups)
    sel = {k: v for k, v in groups.items() if k[4] == conc}
    if all(v[0] <= MAX_NODE_GROUPS for v in sel.values()):
        return model_series(model, Rows(fetch(conc)))
    parts: dict[tuple[str, str, int], list[tuple]] = defaultdict(list)
    for key in sel:
        parts[(key[0], key[1], key[3])].append(key)
    lines: dict[tuple[str, str], tuple[list, list, list]] = {}
    for (gpu, backend, bs), keys in sorted(parts.items()):
        if len(keys) == 1:
            _n, ips, p99 = sel[keys[0]]
        else:
            ts = fetch(conc, gpu=gpu, backend=backend, bs=bs)
            ips, p99 = statistics.median(t[9] for t in ts), statistics.median(t[11] for t in ts)
        xs, ys, zs = lines.setdefault((gpu, backend), ([], [], []))
        xs.append(bs), ys.append(ips), zs.append(p99)
    return {"title": f"{model} — by GPU (median over nodes) and backend, concurrency {conc}",
            "lines": [(g, b, *v) for (g, b), v in lines.items()], "batches": sorted({k[3] for k in sel})}


def model_series(model: str, rows) -> dict | None:
    """``model_series_from_groups`` for a list of Rows (or ``Rows``) of one model."""
    groups: dict[tuple, list[tuple]] = defaultdict(list)
    for t in as_tuples(rows):
        groups[(t[1], t[5], t[6], t[7], t[8])].append(t)
    return model_series_from_groups(model, groups)


def _nice_ticks(top: float, n: int = 5) -> list[float]:
    if top <= 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


def _label(v: float) -> str:
    if v >= 1000:
        return f"{v:,.0f}"
    return f"{v:g}" if v >= 1 or v == 0 else f"{v:.2g}"


def _panel(out: list[str], x0: float, series: dict, values: int, ylabel: str, colors: dict, dashes: dict) -> None:
    w, h, top, left = 330.0, 220.0, 34.0, x0 + 58.0
    batches = series["batches"] or [1]
    lo, hi = math.log2(min(batches)), math.log2(max(batches))
    span = (hi - lo) or 1.0

    def sx(b: float) -> float:
        return left + (math.log2(b) - lo) / span * w if hi > lo else left + w / 2

    ymax = max((v for ln in series["lines"] for v in ln[values] if v is not None and math.isfinite(v)),
               default=1.0)
    ticks = _nice_ticks(ymax * 1.05)
    ytop = ticks[-1] or 1.0

    def sy(v: float) -> float:
        return top + h - v / ytop * h

    out.append(f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#888"/>')
    for t in ticks:
        y = sy(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + w}" y2="{y:.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end">{_label(t)}</text>')
    for b in batches:
        x = sx(b)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + h}" stroke="#eee"/>'
                   f'<text x="{x:.1f}" y="{top + h + 13}" text-anchor="middle">{b}</text>')
    out.append(f'<text x="{left + w / 2}" y="{top + h + 28}" text-anchor="middle">batch size</text>'
               f'<text transform="translate({x0 + 12},{top + h / 2}) rotate(-90)" text-anchor="middle">'
               f'{escape(ylabel)}</text>')
    for group, backend, xs, *vals in series["lines"]:
        ys = vals[values - 3]
        pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys) if y is not None and math.isfinite(y))
        dash = f' stroke-dasharray="{dashes[backend]}"' if dashes[backend] else ""
        out.append(f'<polyline points="{pts}" fill="none" stroke="{colors[group]}" stroke-width="1.5"{dash}/>')
        out.extend(f'<circle cx="{p.split(",")[0]}" cy="{p.split(",")[1]}" r="2" fill="{colors[group]}"/>'
                   for p in pts.split())


def draw(series: dict) -> str:
    """The figure as an inline ``<svg>`` element (HTML5: no namespace needed)."""
    groups = sorted({g for g, *_ in series["lines"]})
    backends = sorted({b for _, b, *_ in series["lines"]})
    colors = {g: COLORS[i % len(COLORS)] for i, g in enumerate(groups)}
    others = iter(OTHER_DASHES * (len(backends) // len(OTHER_DASHES) + 1))
    dashes = {b: BACKEND_DASH[b] if b in BACKEND_DASH else next(others) for b in backends}
    height = max(300, 40 + 15 * (len(groups) + len(backends) + 1))
    out = [(f'<svg class="figure" role="img" width="960" height="{height}" viewBox="0 0 960 {height}" '
           'font-family="sans-serif" font-size="10">'),
           f'<title>{escape(series["title"])}</title>',
           f'<text x="400" y="16" text-anchor="middle" font-size="12">{escape(series["title"])}</text>']
    _panel(out, 0, series, 3, "throughput (inferences/s)", colors, dashes)
    _panel(out, 400, series, 4, "p99 latency (ms)", colors, dashes)
    # one legend entry per colour (node/GPU) and per line style (backend), not per line
    y = 40
    for g in groups:
        out.append(f'<line x1="800" y1="{y}" x2="824" y2="{y}" stroke="{colors[g]}" stroke-width="2"/>'
                   f'<text x="830" y="{y + 3}">{escape(g)}</text>')
        y += 15
    y += 5
    for b in backends:
        dash = f' stroke-dasharray="{dashes[b]}"' if dashes[b] else ""
        out.append(f'<line x1="800" y1="{y}" x2="824" y2="{y}" stroke="#000" stroke-width="1.5"{dash}/>'
                   f'<text x="830" y="{y + 3}">{escape(b)}</text>')
        y += 15
    out.append("</svg>")
    return "".join(out)


def model_figures(rows_by_model: dict[str, list[Row]] | None = None,
                  series: dict[str, dict | None] | None = None) -> dict[str, str | None]:
    """model -> inline SVG (None for a model without rows), from ready series
    (``Report.series``) or from each model's rows."""
    if series is None:
        series = {m: model_series(m, rows) for m, rows in (rows_by_model or {}).items()}
    return {m: draw(s) if s is not None else None for m, s in series.items()}
