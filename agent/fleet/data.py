"""The fleet report's numbers.

The newest result of every (node, model, backend, precision, batch,
concurrency) — by *effective* time, see ``EFFECTIVE_AT`` — is kept in
``latest_results`` (the collector folds the runs it stored into it when idle, the
report first folds whatever is left: ``agent.collector.latest``; ``LATEST_SQL``'s window function over every result is the
reference the tests compare it with), with its speedup over eager on the same
node and its cost per million inferences. The report summarises it in SQL
(``agent.fleet.summary``: per-GPU medians, the best configuration under a p99
budget, the figures' points, the MLPerf scenario tables), so that its time
grows with the number of configurations summarised, not with the fleet. The
rows themselves are read only where they are shown or exported: a small
fleet's per-node tables, results.csv and scenarios.csv (up to
RESULTS_CSV_MAX_ROWS results, or on request) — as Row-field-ordered tuples,
``Row`` objects made on demand (``Report.rows``).

The stack comparison (the newest stack of every upgraded node against its
newest earlier one) and ``--compare`` read the results of the runs concerned,
one pass over raw DB-API tuples (``_pick_newest``). A result counts as stable
when the bench said so and its windows' coefficient of variation (``cv_pct``,
where recorded) is at most ``max_cv_pct`` (``is_stable``)."""

from __future__ import annotations

import gc
import statistics
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from itertools import starmap
from operator import attrgetter, itemgetter

from sqlalchemy import Engine, bindparam, text

from agent.errors import AgentError
from agent.fleet.scenarios import ScenarioTables
from agent.fleet.tuning import tuning_tables

MAX_NODES_DETAIL = 25  # per-node tables in HTML/Markdown up to this many nodes; the CSV always has all
# results.csv and scenarios.csv export every newest result (372,000 + 48,000 rows at 1,000
# nodes): by default they are read and written up to this many results; above, only on
# request (--results-csv), and the report says so. Nothing else in the report grows with the fleet.
RESULTS_CSV_MAX_ROWS = 100_000


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
    cv_pct: float | None = None  # coefficient of variation of the windows used (schema 1.1), %
    # telemetry (schema 1.1): Triton's per-request queue and compute time (served results),
    # mean GPU power and utilisation (CPU nodes: the measuring process's CPU, 100 = one core)
    queue_us: float | None = None
    compute_us: float | None = None
    power_w: float | None = None
    utilization_pct: float | None = None
    ips_per_watt: float | None = None  # throughput / power where power is known


ROW_FIELDS = tuple(f.name for f in fields(Row))
row_tuple = attrgetter(*ROW_FIELDS)


class Rows(Sequence):
    """The report's newest results, kept as tuples in ``Row`` field order; a ``Row`` is
    made only when one is read. Given unsorted, they are sorted into the report's order
    (``ROW_ORDER``) when first read. ``Rows.unread(n)``: a large fleet's report that did
    not read its n results (it writes no results.csv): its length is known, reading fails."""

    __slots__ = ("_count", "_sorted", "_tuples")

    def __init__(self, tuples: list[tuple] | None, sort: bool = False, count: int | None = None) -> None:
        self._tuples, self._sorted = tuples, not sort
        self._count = len(tuples) if tuples is not None else count

    @classmethod
    def unread(cls, count: int) -> Rows:
        return cls(None, count=count)

    @property
    def read(self) -> bool:
        return self._tuples is not None

    @property
    def tuples(self) -> list[tuple]:
        if self._tuples is None:
            raise AgentError(f"the report did not read its {self._count:,} results: build it with rows=True "
                             "(agent fleet report --results-csv)")
        if not self._sorted:
            self._tuples.sort(key=ROW_ORDER)
            self._sorted = True
        return self._tuples

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [Row(*t) for t in self.tuples[i]]
        return Row(*self.tuples[i])

    def __iter__(self) -> Iterator[Row]:
        return starmap(Row, self.tuples)


def as_tuples(rows: Sequence[Row]) -> list[tuple]:
    return rows.tuples if isinstance(rows, Rows) else [row_tuple(r) for r in rows]


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
    rows: Sequence[Row]  # a list, or ``Rows`` (tuples, Row made on access) from build_report
    by_gpu: list[dict]
    best: list[dict]
    comparisons: list[Comparison]
    compared_nodes: list[dict] = field(default_factory=list)
    series: dict[str, dict | None] | None = None  # the figures' data per model (plots.model_series)
    max_cv_pct: float = 5.0
    scenarios: ScenarioTables | None = None  # MLPerf LoadGen scenarios (agent.fleet.scenarios)
    speedup_ci: dict[tuple, tuple] = field(default_factory=dict)  # per-node tables only: see speedup_intervals
    tuning: object = None  # agent tune's points (agent.fleet.tuning.TuningTables)

    @property
    def models(self) -> list[str]:
        return sorted({g["model"] for g in self.by_gpu})  # by_gpu has every (model, GPU) with a row

    def rows_for(self, model: str) -> list[Row]:
        return [Row(*t) for t in as_tuples(self.rows) if t[4] == model]

    @property
    def unstable(self) -> int:
        """Configurations whose newest result is unstable (shown, marked ⚠, never "best")."""
        return sum(g["unstable"] for g in self.by_gpu)


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
         r.throughput_ips, r.p50_ms, r.p99_ms, r.stable, r.created_at, r.cv_pct,
         ROW_NUMBER() OVER (
           PARTITION BY r.node_name, r.model, r.backend, r.precision, r.batch_size, r.concurrency
           ORDER BY r.effective_at DESC, r.id DESC) AS rn
  FROM (SELECT res.*, CASE WHEN ru0.target = 'triton' THEN 'triton-' || res.format
                           ELSE res.format END AS backend,
               CASE WHEN res.created_at > ru0.received_at THEN ru0.received_at
                    ELSE res.created_at END AS effective_at
        FROM results res JOIN runs ru0 ON ru0.id = res.run_id
        WHERE res.scenario IS NULL AND res.tuning IS NULL) r {where}
)
SELECT l.node_name, COALESCE(ru.gpu_name, 'cpu'), COALESCE(ru.instance_type, ''), ru.price_per_hour,
       l.model, l.backend, l.precision, l.batch_size, l.concurrency, l.throughput_ips, l.p50_ms,
       l.p99_ms, l.stable, l.run_id, l.created_at, ru.stack, l.cv_pct
FROM latest l JOIN runs ru ON ru.id = l.run_id
WHERE l.rn = 1
ORDER BY l.model, 2, l.node_name, l.backend, l.precision, l.batch_size, l.concurrency
"""


RUNS_SQL = """SELECT id, node_name, COALESCE(gpu_name, 'cpu'), COALESCE(instance_type, ''), price_per_hour,
       target, created_at, received_at, stack, {in_window} FROM runs{where}"""
RESULTS_SQL = """SELECT run_id, node_name, model, format, precision, batch_size, concurrency, throughput_ips,
       p50_ms, p99_ms, stable, created_at, id, cv_pct, scenario, scenario_valid, scenario_metric,
       queue_us, compute_us, power_w, utilization_pct, input
FROM results{where}"""
FETCH = 20_000


def _raw(conn, sql: str, params: dict, expanding: tuple[str, ...] = ()):
    """Rows as the DB-API driver returns them (plain tuples): half the cost of
    SQLAlchemy's rows at 372,000 results, and nothing of theirs is needed here."""
    stmt = text(sql)
    if expanding:
        stmt = stmt.bindparams(*(bindparam(n, expanding=True) for n in expanding))
    res = conn.execute(stmt, params)
    try:
        cur = res.cursor
        while batch := cur.fetchmany(FETCH):
            yield from batch
    finally:
        res.close()


def _runs(conn, since: datetime | None, run_ids: list[str] | None = None) -> dict[str, tuple]:
    """id -> (node, gpu, instance type, $/hour, served by Triton, created, received, stack, in window).
    With ``since``: only runs received since then (a result's effective time —
    min(created_at, received_at) — is >= since exactly when both are); "in
    window" says the run itself was also created since then (the stack
    comparison's rule for runs)."""
    conds, params = [], {}
    if since is not None:
        conds.append("received_at >= :since")
        params["since"] = since
    if run_ids is not None:
        conds.append("id IN :run_ids")
        params["run_ids"] = list(run_ids)
    sql = RUNS_SQL.format(in_window="CASE WHEN created_at >= :since THEN 1 ELSE 0 END" if since is not None else "1",
                          where=(" WHERE " + " AND ".join(conds)) if conds else "")
    return {t[0]: (t[1], t[2], t[3], t[4], t[5] == "triton", t[6], t[7], t[8], bool(t[9]))
            for t in _raw(conn, sql, params, ("run_ids",) if run_ids is not None else ())}


def _stack_pairs(runs: dict[str, tuple]) -> dict[str, tuple[str, str]]:
    """Per node: (before, after) = (the newest earlier stack that differs, the newest stack),
    "newest" by effective time (a run cannot be newer than its arrival), ties by id."""
    by_node: dict[str, list[tuple]] = defaultdict(list)
    for rid, (node, _g, _i, _p, _s, created, received, stack, in_window) in runs.items():
        if in_window:
            by_node[node].append((min(created, received), rid, stack))
    pairs = {}
    for node, rs in by_node.items():
        rs.sort(reverse=True)
        after = rs[0][2]
        before = next((s for _e, _r, s in rs if s != after), None)
        if before is not None:
            pairs[node] = (before, after)
    return pairs


def _pick_newest(conn, since: datetime | None, runs: dict[str, tuple],
                 pairs: dict[str, tuple[str, str]] | None = None,
                 run_ids: list[str] | None = None) -> tuple[dict, dict]:
    """One pass over the sweep results of ``run_ids`` (all when None): the newest of every
    configuration (and, for the nodes in ``pairs``, the newest per configuration among the
    before-stack runs and among the after-stack runs). Values are (effective time, result
    id, raw row, run). For two runs (``--compare``) and the runs of upgraded nodes: the
    report's newest results otherwise come from ``latest_results`` (agent.fleet.summary)."""
    # tuning points (agent tune) and MLPerf scenarios are never compared here
    conds, params = ["tuning IS NULL", "scenario IS NULL"], {}
    if since is not None:
        conds.append("created_at >= :since")  # ix_results_created; the run's received_at is checked via ``runs``
        params["since"] = since
    if run_ids is not None:
        conds.append("run_id IN :run_ids")
        params["run_ids"] = list(run_ids)
    sql = RESULTS_SQL.format(where=(" WHERE " + " AND ".join(conds)) if conds else "")
    newest: dict[tuple, tuple] = {}
    sides: dict[tuple, tuple] = {}
    get, sget = newest.get, sides.get
    for t in _raw(conn, sql, params, ("run_ids",) if run_ids is not None else ()):
        run = runs.get(t[0])
        if run is None:
            continue
        created, received, rid = t[11], run[6], t[12]
        eff = min(created, received)
        # encoded-image requests (decode + preprocessing timed too) are a backend of their own
        backend = ("triton-" + t[3] if run[4] else t[3]) + (" images" if t[21] == "image" else "")
        key = (t[1], t[2], backend, t[4], t[5], t[6])
        old = get(key)
        if old is None or eff > old[0] or (eff == old[0] and rid > old[1]):
            newest[key] = (eff, rid, t, run)
        if pairs and run[8] and (pair := pairs.get(t[1])) is not None:
            side = 0 if run[7] == pair[0] else 1 if run[7] == pair[1] else None
            if side is not None:
                skey = (side, *key)
                old = sget(skey)
                if old is None or eff > old[0] or (eff == old[0] and rid > old[1]):
                    sides[skey] = (eff, rid, t, run)
    return newest, sides


MAX_CV_PCT = 5.0  # default --max-cv: a result whose windows varied more is flagged unstable
ROW_ORDER = itemgetter(4, 1, 0, 5, 6, 7, 8)  # model, GPU, node, backend, precision, batch, concurrency


def is_stable(stable: bool, cv_pct: float | None, max_cv_pct: float = MAX_CV_PCT) -> bool:
    """A result counts as stable when the bench said so (its last windows agreed
    within the stability threshold) and, where recorded, the coefficient of
    variation of those windows' throughputs is at most ``max_cv_pct``."""
    return bool(stable) and (cv_pct is None or cv_pct <= max_cv_pct)


def _row_tuples(picked, max_cv_pct: float = MAX_CV_PCT, sort: bool = True) -> list[tuple]:
    """Row-field-ordered tuples (speedup and cost derived, stability per ``is_stable``),
    sorted like the report (unless ``sort`` is false: ``Rows`` sorts when read)."""
    picked = list(picked)
    # key: (node, model, backend, precision, batch, concurrency); v[2][7]: throughput
    # (image requests are compared with eager on images: the same preprocessing in both)
    eager = {(k[0], k[1], k[3], k[4], k[5], k[2] != "eager"): v[2][7] for k, v in picked
             if k[2] in ("eager", "eager images")}
    stamps: dict = {}
    out = []
    append = out.append
    for key, (_eff, _rid, t, run) in picked:
        node, model, backend, precision, bs, conc = key
        created, ips, price, cv = t[11], t[7], run[3], t[13]
        ts = stamps.get(created)
        if ts is None:
            ts = stamps[created] = datetime.fromisoformat(created) if isinstance(created, str) else created
        images = backend.endswith(" images")
        base = eager.get((node, model, precision, bs, conc, images)) or eager.get((node, model, "fp32", bs, conc, images))
        append((node, run[1], run[2], price, model, backend, precision, bs, conc, ips, t[8], t[9],
                bool(t[10]) and (cv is None or cv <= max_cv_pct), t[0], ts, run[7], ips / base if base else None,
                None if price is None or ips <= 0 else price / (ips * 3600.0) * 1e6, cv,  # cost_per_million, cv
                t[17], t[18], t[19], t[20], ips / t[19] if t[19] else None))  # queue, compute, W, util, inf/s/W
    if sort:
        out.sort(key=ROW_ORDER)
    return out


@contextmanager
def no_gc():
    """Hundreds of thousands of tuples, no reference cycle among them: the cyclic
    garbage collector would only traverse them again and again (a third of the time).
    On the way out they are moved to the permanent generation (``gc.freeze``) before
    the collector is switched back on; otherwise its first run would traverse every
    object made meanwhile (about a second at 1,000 nodes). Reference counting still
    frees them when the report goes."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.freeze()
            gc.enable()


def _latest_rows(conn, since: datetime | None, run_ids: list[str] | None = None,
                 max_cv_pct: float = MAX_CV_PCT) -> list[Row]:
    """The newest result of every configuration (of ``run_ids`` only, when given), as Rows."""
    if since is not None and since.tzinfo is not None:
        since = since.astimezone(UTC).replace(tzinfo=None)
    newest, _ = _pick_newest(conn, since, _runs(conn, since, run_ids), run_ids=run_ids)
    return [Row(*t) for t in _row_tuples(newest.items(), max_cv_pct)]


# _derive, _by_gpu and _best: the report's definitions over Row objects — the reference the
# tests hold agent.fleet.summary's SQL to, and how a Report is made from a list of Rows
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
    return [best_entry(model, kind, None if r is None else best_values(r), budget, model in fastest)
            for model in sorted(models)
            for kind, r in (("fastest", fastest.get(model)), ("cheapest", cheapest.get(model)))]


BEST_FIELDS = ("node", "gpu", "backend", "precision", "batch_size", "concurrency", "throughput_ips", "p99_ms",
               "cost_per_million", "utilization_pct", "ips_per_watt")
best_values = attrgetter(*BEST_FIELDS)  # a Row's values of the best table


def best_entry(model: str, kind: str, found: tuple | None, budget: float | None, has_fastest: bool) -> dict:
    """One line of the best table: ``found``, the chosen configuration's BEST_FIELDS values,
    or None and why there is none (``has_fastest``: the model has a stable configuration,
    so the cheapest lacks only a price)."""
    if found is not None:
        return {"model": model, "criterion": kind, **dict(zip(BEST_FIELDS, found, strict=True)), "note": ""}
    within = "" if budget is None else " within the p99 budget"
    return {"model": model, "criterion": kind, **dict.fromkeys(BEST_FIELDS),
            "note": f"no stable configuration{within}"
            + (" with a known $/hour" if kind == "cheapest" and has_fastest else "")}


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


def _stack_comparisons(sides: dict[tuple, tuple], pairs: dict[str, tuple[str, str]],
                       threshold: float, max_cv_pct: float = MAX_CV_PCT) -> tuple[list[Comparison], list[dict]]:
    """Per node: the newest stack against the newest earlier run with a different stack,
    configuration by configuration (``sides`` from the one pass of ``_pick_newest``)."""
    if not pairs:
        return [], []
    per_node: dict[str, tuple[list, list]] = {node: ([], []) for node in pairs}
    for (side, *key), v in sides.items():
        per_node[key[0]][side].append((tuple(key), v))
    comparisons, nodes = [], []
    for node in sorted(pairs):
        before, after = per_node[node]
        cs = _compare([Row(*t) for t in _row_tuples(before, max_cv_pct)],
                      [Row(*t) for t in _row_tuples(after, max_cv_pct)], threshold)
        comparisons += cs
        nodes.append(_compared_node(node, *pairs[node], cs))
    return comparisons, nodes


def _compared_node(node: str, before_stack: str, after_stack: str, cs: list[Comparison]) -> dict:
    b, a = dict(x.split("=", 1) for x in before_stack.split()), dict(x.split("=", 1) for x in after_stack.split())
    changed = " ".join(f"{k} {b.get(k)}→{a.get(k)}" for k in a if a.get(k) != b.get(k))
    return {"node": node, "before_stack": before_stack, "after_stack": after_stack, "changed": changed,
            "configs": len(cs), "regressions": sum(c.flag == "regression" for c in cs),
            "improvements": sum(c.flag == "improvement" for c in cs),
            "unstable": sum(not c.stable for c in cs)}


def _nodes(conn) -> list[dict]:
    q = text("""SELECT n.name, n.hostname, n.cloud, n.region, n.instance_type, n.price_per_hour,
                       n.gpu_name, n.last_seen, COUNT(r.id)
                FROM nodes n LEFT JOIN runs r ON r.node_name = n.name
                GROUP BY n.name, n.hostname, n.cloud, n.region, n.instance_type, n.price_per_hour,
                         n.gpu_name, n.last_seen ORDER BY n.name""")
    cols = ["node", "hostname", "cloud", "region", "instance_type", "price_per_hour", "gpu", "last_seen", "runs"]
    return [dict(zip(cols, t)) for t in conn.execute(q)]


def speedup_intervals(conn, tuples: list[tuple]) -> dict[tuple, tuple]:
    """(run, model, backend, precision, batch, concurrency) -> (low, high, pairs): the
    95 % interval of the speedup over eager, which only the stored documents hold
    (schema 1.1). Read for the per-node tables only, i.e. a fleet of at most
    MAX_NODES_DETAIL nodes: reading every document of a large fleet would cost more
    than the rest of the report."""
    import json

    backends = defaultdict(set)
    for t in tuples:
        backends[t[13]].add(t[5])
    out: dict[tuple, tuple] = {}
    stmt = text("SELECT id, target, document FROM runs WHERE id IN :ids").bindparams(
        bindparam("ids", expanding=True))
    for rid, target, doc in conn.execute(stmt, {"ids": sorted(backends)}):
        for r in json.loads(doc).get("results", []):
            if r.get("scenario") is None and r.get("speedup_ci_low") is not None:
                backend = ("triton-" if target == "triton" else "") + r["format"]
                out[(rid, r["model"], backend, r.get("precision", "fp32"), r["batch_size"],
                     r.get("concurrency", 1))] = (r["speedup_ci_low"], r["speedup_ci_high"], r.get("speedup_pairs"))
    return out


def build_report(engine: Engine, since: datetime | None = None, threshold_pct: float = 5.0,
                 p99_budget_ms: float | None = None, compare: tuple[str, str] | None = None,
                 max_cv_pct: float = MAX_CV_PCT, rows: bool | None = None) -> Report:
    """``rows``: read every newest result (results.csv, scenarios.csv): None = when there
    are at most RESULTS_CSV_MAX_ROWS; a fleet of at most MAX_NODES_DETAIL nodes always
    (its per-node tables show them)."""
    from agent.collector.latest import fold_pending

    if since is not None and since.tzinfo is not None:
        since = since.astimezone(UTC).replace(tzinfo=None)
    fold_pending(engine)  # the runs the collector has not folded into latest_results yet
    with no_gc():
        return _build_report(engine, since, threshold_pct, p99_budget_ms, compare, max_cv_pct, rows)


def _build_report(engine: Engine, since: datetime | None, threshold_pct: float, p99_budget_ms: float | None,
                  compare: tuple[str, str] | None, max_cv_pct: float, with_rows: bool | None) -> Report:
    from agent.fleet import summary
    from agent.fleet.plots import model_series_from_summary
    from agent.fleet.scenarios import ScenarioTables, scenario_rows

    with engine.connect() as conn, summary.working_table(conn, since) as table:
        runs = _runs(conn, since)
        groups = summary.Groups(conn, table, max_cv_pct, p99_budget_ms)
        detail = len({r[0] for r in runs.values()}) <= MAX_NODES_DETAIL
        # every newest result read: for results.csv and scenarios.csv (up to the limit, or asked), per-node tables
        read = detail or (groups.results <= RESULTS_CSV_MAX_ROWS if with_rows is None else with_rows)
        tuples = summary.sweep_rows(conn, table, max_cv_pct) if read else None
        by_gpu = summary.sweep_summary(conn, groups)
        models = sorted({g["model"] for g in by_gpu})
        best = summary.best_configs(conn, groups)
        per_model: dict[str, dict[tuple, tuple]] = defaultdict(dict)
        for g in by_gpu:
            per_model[g["model"]][(g["gpu"], g["backend"], g["precision"], g["batch_size"], g["concurrency"])] = (
                g["nodes"], g["median_ips"], g["median_p99_ms"])
        series = {m: model_series_from_summary(m, per_model[m], summary.figure_rows(conn, table, max_cv_pct, m))
                  for m in models}
        ci = speedup_intervals(conn, tuples) if detail and tuples else {}
        sc_summary, sc_best = summary.scenario_summary(conn, table)
        sc_rows = scenario_rows(conn, summary.newest_scenarios(conn, table, invalid_only=not read))
        scenarios = ScenarioTables(sc_rows if read else None, sc_summary, sc_best,
                                   invalid=[r for r in sc_rows if r.verdict == "INVALID"])
        if compare:
            comparisons, compared = _run_comparison(conn, compare, threshold_pct, max_cv_pct)
        else:
            pairs = _stack_pairs(runs)
            ids = [rid for rid, run in runs.items() if run[8] and run[0] in pairs and run[7] in pairs[run[0]]]
            _, sides = _pick_newest(conn, since, runs, pairs, run_ids=ids) if ids else ({}, {})
            comparisons, compared = _stack_comparisons(sides, pairs, threshold_pct, max_cv_pct)
        nodes = _nodes(conn)
        tuning = tuning_tables(conn, since)
    return Report(generated_at=datetime.now(UTC), since=since, threshold_pct=threshold_pct,
                  p99_budget_ms=p99_budget_ms, nodes=nodes,
                  rows=Rows(tuples, sort=True) if tuples is not None else Rows.unread(groups.results),
                  by_gpu=by_gpu, best=best, comparisons=comparisons, compared_nodes=compared, series=series,
                  max_cv_pct=max_cv_pct, scenarios=scenarios, speedup_ci=ci, tuning=tuning)


def _run_comparison(conn, compare: tuple[str, str], threshold_pct: float,
                    max_cv_pct: float) -> tuple[list[Comparison], list[dict]]:
    """``--compare BEFORE AFTER``: two runs of one node, or of two nodes, matched by configuration."""
    found = {r[0] for r in conn.execute(
        text("SELECT id FROM runs WHERE id IN :ids").bindparams(bindparam("ids", expanding=True)),
        {"ids": list(compare)})}
    missing = [x for x in compare if x not in found]
    if missing:
        raise AgentError(f"--compare: no run with id {missing[0]!r} in the database")
    before = _latest_rows(conn, None, [compare[0]], max_cv_pct)
    after = _latest_rows(conn, None, [compare[1]], max_cv_pct)
    comparisons = _compare(before, after, threshold_pct, same_node=False)
    compared = []
    if before and after:
        label = before[0].node if before[0].node == after[0].node else f"{before[0].node} → {after[0].node}"
        compared = [_compared_node(label, before[0].stack, after[0].stack, comparisons)]
    return comparisons, compared


def row_dict(r: Row | Comparison) -> dict:
    return asdict(r)
