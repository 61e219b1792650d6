"""The fleet report's numbers.

The database does the heavy lifting: one window-function query picks the
newest result of every (node, model, backend, precision, batch, concurrency)
out of all results (``ix_results_config`` covers it), joined with the run
that measured it (GPU, $/hour, stack). Everything derived — speedup over
eager on the same node, cost per million inferences, the per-GPU summary,
the best configuration under a p99 budget and the before/after stack
comparison — is one pass over those rows in Python."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine, bindparam, text

from agent.errors import AgentError


@dataclass(slots=True)
class Row:
    node: str
    gpu: str
    instance_type: str
    price_per_hour: float | None
    model: str
    backend: str
    precision: str
    batch_size: int
    concurrency: int
    throughput_ips: float
    p50_ms: float
    p99_ms: float
    stable: bool
    run_id: str
    created_at: datetime
    stack: str
    speedup_vs_eager: float | None = None
    cost_per_million: float | None = None


@dataclass(slots=True)
class Comparison:
    node: str
    model: str
    backend: str
    precision: str
    batch_size: int
    concurrency: int
    before_run: str
    after_run: str
    before_stack: str
    after_stack: str
    before_ips: float
    after_ips: float
    ips_change_pct: float
    before_p99_ms: float
    after_p99_ms: float
    p99_change_pct: float
    flag: str  # regression | improvement | unchanged
    stable: bool = True  # both measurements stable; an unstable pair is flagged "⚠ unstable" in the report


@dataclass
class Report:
    generated_at: datetime
    since: datetime | None
    threshold_pct: float
    p99_budget_ms: float | None
    nodes: list[dict]
    rows: list[Row]
    by_gpu: list[dict]
    best: list[dict]
    comparisons: list[Comparison]
    compared_nodes: list[dict] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        return sorted({r.model for r in self.rows})

    def rows_for(self, model: str) -> list[Row]:
        return [r for r in self.rows if r.model == model]

    @property
    def unstable(self) -> int:
        """Configurations whose newest result is unstable (shown, marked ⚠, never "best")."""
        return sum(not r.stable for r in self.rows)


def cost_per_million(price_per_hour: float | None, throughput_ips: float) -> float | None:
    """USD per 10^6 inferences at the measured throughput, the node fully busy."""
    if price_per_hour is None or throughput_ips <= 0:
        return None
    return price_per_hour / (throughput_ips * 3600.0) * 1e6


def pct(before: float, after: float) -> float:
    return (after - before) / before * 100.0 if before else float("inf")


# "Newest" is by *effective* time: the result's created_at, but never later than
# when the collector received its run. created_at comes from the document (the
# node's clock, or whoever wrote it); received_at is the collector's own clock. A
# document claiming 2099 would otherwise stay "newest" for its configuration
# forever and hide every later real measurement of that node. CASE WHEN, not
# MIN()/LEAST(): the scalar two-argument minimum is spelled differently on
# SQLite and PostgreSQL. (The collector also refuses far-future documents at
# ingest; this defends the report against rows stored before or around that.)
EFFECTIVE_AT = "CASE WHEN {t}.created_at > {t}.received_at THEN {t}.received_at ELSE {t}.created_at END"

# A result served through Triton is its own backend ("triton-onnx"), so the
# newest in-process and served measurements of one engine never hide each other.
LATEST_SQL = """
WITH latest AS (
  SELECT r.run_id, r.node_name, r.model, r.backend, r.precision, r.batch_size, r.concurrency,
         r.throughput_ips, r.p50_ms, r.p99_ms, r.stable, r.created_at,
         ROW_NUMBER() OVER (
           PARTITION BY r.node_name, r.model, r.backend, r.precision, r.batch_size, r.concurrency
           ORDER BY r.effective_at DESC, r.id DESC) AS rn
  FROM (SELECT res.*, CASE WHEN ru0.target = 'triton' THEN 'triton-' || res.format
                           ELSE res.format END AS backend,
               CASE WHEN res.created_at > ru0.received_at THEN ru0.received_at
                    ELSE res.created_at END AS effective_at
        FROM results res JOIN runs ru0 ON ru0.id = res.run_id) r {where}
)
SELECT l.node_name, COALESCE(ru.gpu_name, 'cpu'), COALESCE(ru.instance_type, ''), ru.price_per_hour,
       l.model, l.backend, l.precision, l.batch_size, l.concurrency, l.throughput_ips, l.p50_ms,
       l.p99_ms, l.stable, l.run_id, l.created_at, ru.stack
FROM latest l JOIN runs ru ON ru.id = l.run_id
WHERE l.rn = 1
ORDER BY l.model, 2, l.node_name, l.backend, l.precision, l.batch_size, l.concurrency
"""


def _latest_rows(conn, since: datetime | None, run_ids: list[str] | None = None) -> list[Row]:  # noqa: ANN001
    conds, params = [], {}
    if since is not None:
        # effective_at <= created_at: the first test lets the index narrow, the second decides
        conds.append("r.created_at >= :since AND r.effective_at >= :since")
        params["since"] = since
    if run_ids is not None:
        conds.append("r.run_id IN :run_ids")
        params["run_ids"] = list(run_ids)
    sql = text(LATEST_SQL.format(where=("WHERE " + " AND ".join(conds)) if conds else ""))
    if run_ids is not None:
        sql = sql.bindparams(bindparam("run_ids", expanding=True))
    out = []
    for t in conn.execute(sql, params):
        r = Row(*t)
        r.stable = bool(r.stable)
        if isinstance(r.created_at, str):  # SQLite returns raw text for text() queries
            r.created_at = datetime.fromisoformat(r.created_at)
        out.append(r)
    return out


def _derive(rows: list[Row]) -> None:
    eager = {(r.node, r.model, r.precision, r.batch_size, r.concurrency): r.throughput_ips
             for r in rows if r.backend == "eager"}
    for r in rows:
        base = eager.get((r.node, r.model, r.precision, r.batch_size, r.concurrency)) or \
            eager.get((r.node, r.model, "fp32", r.batch_size, r.concurrency))
        r.speedup_vs_eager = r.throughput_ips / base if base else None
        r.cost_per_million = cost_per_million(r.price_per_hour, r.throughput_ips)


def _median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _by_gpu(rows: list[Row]) -> list[dict]:
    """Per model × GPU × configuration, over its nodes. Unstable results are
    counted (``unstable``) and stay in the medians, which one noisy node cannot
    move far; ``best_ips`` (a maximum, which one noisy node can) is over the
    stable results only (None when there is none)."""
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for r in rows:
        groups[(r.model, r.gpu, r.backend, r.precision, r.batch_size, r.concurrency)].append(r)
    out = []
    for (model, gpu, backend, precision, bs, conc), rs in sorted(groups.items()):
        out.append({
            "model": model, "gpu": gpu, "backend": backend, "precision": precision,
            "batch_size": bs, "concurrency": conc, "nodes": len({r.node for r in rs}),
            "unstable": sum(not r.stable for r in rs),
            "median_ips": _median([r.throughput_ips for r in rs]),
            "best_ips": max((r.throughput_ips for r in rs if r.stable), default=None),
            "median_p99_ms": _median([r.p99_ms for r in rs]),
            "median_speedup_vs_eager": _median([r.speedup_vs_eager for r in rs]),
            "median_cost_per_million": _median([r.cost_per_million for r in rs]),
        })
    return out


def _best(rows: list[Row], budget: float | None) -> list[dict]:
    """Fastest and cheapest configuration per model under the p99 budget, out of
    the stable results: an unstable measurement is never recommended."""
    fastest: dict[str, Row] = {}
    cheapest: dict[str, Row] = {}
    models = set()
    within = "" if budget is None else " within the p99 budget"
    for r in rows:
        models.add(r.model)
        if not r.stable or (budget is not None and r.p99_ms > budget):
            continue
        f = fastest.get(r.model)
        if f is None or r.throughput_ips > f.throughput_ips:
            fastest[r.model] = r
        if r.cost_per_million is not None:
            c = cheapest.get(r.model)
            if c is None or r.cost_per_million < c.cost_per_million:
                cheapest[r.model] = r
    out = []
    for model in sorted(models):
        for kind, r in (("fastest", fastest.get(model)), ("cheapest", cheapest.get(model))):
            if r is None:
                out.append({"model": model, "criterion": kind, "node": None, "gpu": None, "backend": None,
                            "precision": None, "batch_size": None, "concurrency": None,
                            "throughput_ips": None, "p99_ms": None, "cost_per_million": None,
                            "note": f"no stable configuration{within}"
                            + (" with a known $/hour" if kind == "cheapest" and model in fastest else "")})
                continue
            out.append({"model": model, "criterion": kind, "node": r.node, "gpu": r.gpu,
                        "backend": r.backend, "precision": r.precision, "batch_size": r.batch_size,
                        "concurrency": r.concurrency, "throughput_ips": r.throughput_ips,
                        "p99_ms": r.p99_ms, "cost_per_million": r.cost_per_million, "note": ""})
    return out


def _flag(ips_change: float, p99_change: float, threshold: float) -> str:
    if ips_change < -threshold or p99_change > threshold:
        return "regression"
    if ips_change > threshold or p99_change < -threshold:
        return "improvement"
    return "unchanged"


def _compare(before: list[Row], after: list[Row], threshold: float, same_node: bool = True) -> list[Comparison]:
    def key(r: Row) -> tuple:
        return ((r.node,) if same_node else ()) + (r.model, r.backend, r.precision, r.batch_size, r.concurrency)

    old = {key(r): r for r in before}
    out = []
    for a in after:
        b = old.get(key(a))
        if b is None:
            continue
        dt, dp = pct(b.throughput_ips, a.throughput_ips), pct(b.p99_ms, a.p99_ms)
        out.append(Comparison(a.node, a.model, a.backend, a.precision, a.batch_size, a.concurrency,
                              b.run_id, a.run_id, b.stack, a.stack, b.throughput_ips, a.throughput_ips,
                              dt, b.p99_ms, a.p99_ms, dp, _flag(dt, dp, threshold), b.stable and a.stable))
    return out


def _stack_comparisons(conn, since, threshold: float) -> tuple[list[Comparison], list[dict]]:  # noqa: ANN001
    """Per node: the newest stack against the newest earlier run with a different stack
    ("newest" by effective time, as in LATEST_SQL: a run cannot be newer than its arrival)."""
    effective = EFFECTIVE_AT.format(t="runs")
    since_sql = f"created_at >= :since AND {effective} >= :since" if since is not None else ""
    q = "SELECT node_name, id, stack FROM runs"
    params = {}
    if since is not None:
        q += " WHERE " + since_sql
        params["since"] = since
    q += f" ORDER BY node_name, {effective} DESC, id DESC"
    pairs: dict[str, tuple[str, str]] = {}
    current: dict[str, str] = {}
    for node, _id, stack in conn.execute(text(q), params):
        if node not in current:
            current[node] = stack
        elif node not in pairs and stack != current[node]:
            pairs[node] = (stack, current[node])  # (before, after)
    if not pairs:
        return [], []
    comparisons, nodes = [], []
    names = sorted(pairs)
    for i in range(0, len(names), 500):
        chunk = names[i:i + 500]
        sql = text("SELECT id, node_name, stack FROM runs WHERE node_name IN :nodes"
                   + (" AND " + since_sql if since is not None else "")).bindparams(
            bindparam("nodes", expanding=True))
        run_stack = {rid: (node, stack) for rid, node, stack in conn.execute(sql, {"nodes": chunk, **params})}
        for node in chunk:
            before_stack, after_stack = pairs[node]
            before_ids = [r for r, (n, s) in run_stack.items() if n == node and s == before_stack]
            after_ids = [r for r, (n, s) in run_stack.items() if n == node and s == after_stack]
            cs = _compare(_latest_rows(conn, since, before_ids), _latest_rows(conn, since, after_ids), threshold)
            comparisons += cs
            nodes.append(_compared_node(node, before_stack, after_stack, cs))
    return comparisons, nodes


def _compared_node(node: str, before_stack: str, after_stack: str, cs: list[Comparison]) -> dict:
    b, a = dict(x.split("=", 1) for x in before_stack.split()), dict(x.split("=", 1) for x in after_stack.split())
    changed = " ".join(f"{k} {b.get(k)}→{a.get(k)}" for k in a if a.get(k) != b.get(k))
    return {"node": node, "before_stack": before_stack, "after_stack": after_stack, "changed": changed,
            "configs": len(cs), "regressions": sum(c.flag == "regression" for c in cs),
            "improvements": sum(c.flag == "improvement" for c in cs),
            "unstable": sum(not c.stable for c in cs)}


def _nodes(conn) -> list[dict]:  # noqa: ANN001
    q = text("""SELECT n.name, n.hostname, n.cloud, n.region, n.instance_type, n.price_per_hour,
                       n.gpu_name, n.last_seen, COUNT(r.id)
                FROM nodes n LEFT JOIN runs r ON r.node_name = n.name
                GROUP BY n.name, n.hostname, n.cloud, n.region, n.instance_type, n.price_per_hour,
                         n.gpu_name, n.last_seen ORDER BY n.name""")
    cols = ["node", "hostname", "cloud", "region", "instance_type", "price_per_hour", "gpu", "last_seen", "runs"]
    return [dict(zip(cols, t)) for t in conn.execute(q)]


def build_report(engine: Engine, since: datetime | None = None, threshold_pct: float = 5.0,
                 p99_budget_ms: float | None = None, compare: tuple[str, str] | None = None) -> Report:
    if since is not None and since.tzinfo is not None:
        since = since.astimezone(UTC).replace(tzinfo=None)
    with engine.connect() as conn:
        rows = _latest_rows(conn, since)
        _derive(rows)
        if compare:
            found = {r[0] for r in conn.execute(
                text("SELECT id FROM runs WHERE id IN :ids").bindparams(bindparam("ids", expanding=True)),
                {"ids": list(compare)})}
            missing = [x for x in compare if x not in found]
            if missing:
                raise AgentError(f"--compare: no run with id {missing[0]!r} in the database")
            before, after = _latest_rows(conn, None, [compare[0]]), _latest_rows(conn, None, [compare[1]])
            # two runs of one node, or of two nodes: matched by configuration
            comparisons = _compare(before, after, threshold_pct, same_node=False)
            compared = []
            if before and after:
                label = before[0].node if before[0].node == after[0].node else f"{before[0].node} → {after[0].node}"
                compared = [_compared_node(label, before[0].stack, after[0].stack, comparisons)]
        else:
            comparisons, compared = _stack_comparisons(conn, since, threshold_pct)
        nodes = _nodes(conn)
    return Report(generated_at=datetime.now(UTC), since=since, threshold_pct=threshold_pct,
                  p99_budget_ms=p99_budget_ms, nodes=nodes, rows=rows, by_gpu=_by_gpu(rows),
                  best=_best(rows, p99_budget_ms), comparisons=comparisons, compared_nodes=compared)


def row_dict(r: Row | Comparison) -> dict:
    return asdict(r)
