"""The fleet report's summaries, aggregated in SQL over the newest results.

``latest_results`` holds the newest result of every configuration, kept by
the collector (``agent.collector.latest``), with its GPU, price, cost per million
inferences and speedup over eager already derived. The report reads
aggregates of it, never its rows one by one: per group of (model, GPU,
backend, precision, batch, concurrency) the node count, the unstable count
and the best stable throughput in one GROUP BY, and the medians of
throughput, p99, speedup and cost. So the report's time grows with the number
of groups it summarises, not with the number of nodes behind them.

Medians: SQLite has no median aggregate and its window functions sort every
row (1.6 s per metric at 1,000 nodes), so the middle value(s) of each group
are read by an index seek (``ORDER BY metric LIMIT 1-2 OFFSET (n-1)/2`` on the
(group, metric) index of ``latest_results``: about 0.03 s per metric for 2,232
groups). PostgreSQL gets one window query per metric. Either way the two
middle values of an even group are averaged here, ``(a + b) / 2``, exactly as
``statistics.median`` does (the tests compare with it).

With ``--since`` the window's rows are copied into a temporary table (on SQLite
with the same indexes), and the speedups recomputed among them (an eager result older
than the window is not a baseline), so the same queries serve both."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import DateTime, MetaData, bindparam, text

from agent.collector.tables import SUMMARY_GROUP, latest_results
from agent.fleet.data import best_entry
from agent.fleet.scenarios import METRIC, RANK

SWEEP = "scenario = ''"
SCENARIO = "scenario <> ''"  # as ix_latest_scenario's WHERE: SQLite uses a partial index only for it
STABLE = "{p}stable AND ({p}cv_pct IS NULL OR {p}cv_pct <= :max_cv)"  # {p}: a table alias and its dot, or ""
SWEEP_KEY = SUMMARY_GROUP[1:]  # model, GPU, backend, precision, batch, concurrency
SCENARIO_KEY = ("model", "scenario", "gpu", "backend", "precision", "batch_size")
WINDOW = "report_latest"

# Row-ordered tuples (agent.fleet.data.Row) of the newest sweep results: latest_results
# with what only the result (p50, created_at, telemetry) and its run (instance type, stack) hold
ROWS_SQL = """SELECT l.node_name, l.gpu, COALESCE(ru.instance_type, ''), l.price_per_hour, l.model, l.backend,
       l.precision, l.batch_size, l.concurrency, l.throughput_ips, res.p50_ms, l.p99_ms,
       CASE WHEN {stable} THEN 1 ELSE 0 END, l.run_id, res.created_at, ru.stack, l.speedup_vs_eager,
       l.cost_per_million, l.cv_pct, res.queue_us, res.compute_us, res.power_w, res.utilization_pct
FROM {table} l JOIN results res ON res.id = l.result_id JOIN runs ru ON ru.id = l.run_id
WHERE l.{sweep}{where}"""


@contextmanager
def working_table(conn, since: datetime | None) -> Iterator[str]:
    """``latest_results``, or with ``since`` a temporary copy of its rows whose effective
    time is in the window (the newest result in the window is the newest overall when it
    is in the window at all), speedups recomputed among them; dropped on the way out."""
    if since is None:
        yield latest_results.name
        return
    from agent.collector.latest import refresh_speedups

    table = latest_results.to_metadata(MetaData(), name=WINDOW)
    table._prefixes = ["TEMPORARY"]  # SQLAlchemy's Table(prefixes=...), on a copy of latest_results
    if conn.dialect.name != "sqlite":
        table.indexes.clear()  # the summary's indexes serve SQLite's median seeks only (tables.py)
    table.create(conn)
    try:
        conn.execute(text(f"INSERT INTO {WINDOW} SELECT * FROM {latest_results.name} WHERE effective_at >= :since")
                     .bindparams(bindparam("since", type_=DateTime)), {"since": since})
        refresh_speedups(conn, WINDOW)
        yield WINDOW
    finally:
        conn.execute(text(f"DROP TABLE {WINDOW}"))


def medians(conn, table: str, column: str, where: str, key: tuple[str, ...],
            counts: dict[tuple, int] | None = None, params: dict | None = None) -> dict[tuple, float]:
    """group (``key`` values) -> median of ``column`` over the rows matching ``where``
    (NULLs left out); ``counts``: the groups' non-NULL counts where already known."""
    params = params or {}
    mids: dict[tuple, list] = {}
    if conn.dialect.name == "sqlite":
        if counts is None:
            counts = {tuple(r[:-1]): r[-1] for r in conn.execute(text(
                f"SELECT {', '.join(key)}, COUNT({column}) FROM {table} WHERE {where} GROUP BY {', '.join(key)}"),
                params)}
        # through the driver: thousands of tiny statements, each an index seek
        cur = conn.connection.driver_connection.cursor()
        sql = (f"SELECT {column} FROM {table} WHERE {where} AND "
               + " AND ".join(f"{k} = :k{i}" for i, k in enumerate(key))
               + f" AND {column} IS NOT NULL ORDER BY {column} LIMIT :lim OFFSET :off")
        for group, n in counts.items():
            if n:
                args = {**params, **{f"k{i}": v for i, v in enumerate(group)},
                        "lim": 2 - n % 2, "off": (n - 1) // 2}
                mids[group] = [r[0] for r in cur.execute(sql, args)]
    else:
        cols = ", ".join(key)
        sql = (f"SELECT {cols}, v FROM (SELECT {cols}, {column} AS v, "
               f"ROW_NUMBER() OVER (PARTITION BY {cols} ORDER BY {column}) AS rn, "
               f"COUNT(*) OVER (PARTITION BY {cols}) AS n FROM {table} WHERE {where} AND {column} IS NOT NULL) s "
               "WHERE rn IN ((n + 1) / 2, (n + 2) / 2) ORDER BY " + cols + ", rn")
        for r in conn.execute(text(sql), params):
            mids.setdefault(tuple(r[:-1]), []).append(r[-1])
    return {g: v[0] if len(v) == 1 else (v[0] + v[1]) / 2 for g, v in mids.items()}


class Groups(dict):
    """(model, GPU, backend, precision, batch, concurrency) -> (nodes, unstable, best stable
    throughput, results with a cost, with a speedup, fastest and cheapest stable within the p99 budget):
    one scan (SQLite: of ``ix_latest_ips``, covering, nothing else is read) serves the
    per-GPU summary and the rankings."""

    def __init__(self, conn, table: str, max_cv_pct: float, budget: float | None) -> None:  # noqa: ANN001
        cols, stable = ", ".join(SWEEP_KEY), STABLE.format(p="")
        ranked = stable + ("" if budget is None else " AND p99_ms <= :budget")
        super().__init__((tuple(r[:6]), tuple(r[6:])) for r in conn.execute(text(
            f"SELECT {cols}, COUNT(*), SUM(CASE WHEN {stable} THEN 0 ELSE 1 END), "
            f"MAX(CASE WHEN {stable} THEN throughput_ips END), COUNT(cost_per_million), COUNT(speedup_vs_eager), "
            f"MAX(CASE WHEN {ranked} THEN throughput_ips END), MIN(CASE WHEN {ranked} THEN cost_per_million END) "
            f"FROM {table} WHERE {SWEEP} GROUP BY {cols}"), {"max_cv": max_cv_pct, "budget": budget}))
        self.table, self.max_cv_pct, self.budget = table, max_cv_pct, budget

    @property
    def results(self) -> int:
        return sum(v[0] for v in self.values())


def sweep_summary(conn, groups: Groups) -> list[dict]:  # noqa: ANN001
    """Per model × GPU × backend × precision × batch × concurrency, over its nodes:
    ``data._by_gpu``'s dicts, in its order."""
    table, n = groups.table, {g: v[0] for g, v in groups.items()}
    ips = medians(conn, table, "throughput_ips", SWEEP, SWEEP_KEY, n)
    p99 = medians(conn, table, "p99_ms", SWEEP, SWEEP_KEY, n)
    speedup = medians(conn, table, "speedup_vs_eager", SWEEP, SWEEP_KEY, {g: v[4] for g, v in groups.items()})
    cost = medians(conn, table, "cost_per_million", SWEEP, SWEEP_KEY, {g: v[3] for g, v in groups.items()})
    out = []
    for g in sorted(groups):
        nodes, unstable, best = groups[g][:3]
        out.append({"model": g[0], "gpu": g[1], "backend": g[2], "precision": g[3], "batch_size": g[4],
                    "concurrency": g[5], "nodes": nodes, "unstable": int(unstable), "median_ips": ips[g],
                    "best_ips": best, "median_p99_ms": p99[g], "median_speedup_vs_eager": speedup.get(g),
                    "median_cost_per_million": cost.get(g)})
    return out


def best_configs(conn, groups: Groups) -> list[dict]:  # noqa: ANN001
    """``data._best``: the fastest and the cheapest stable configuration per model within
    the p99 budget, ties to the first in the report's order (GPU, node, backend, ...). The
    best value per model is known from ``groups``; the rows holding it are read by an index
    seek per group on SQLite, one scan per criterion on PostgreSQL (a tie gives several,
    ordered here: Python's order, not the database's collation)."""
    budget, stable = groups.budget, STABLE.format(p="l.")
    top: dict[str, dict[str, float]] = {"fastest": {}, "cheapest": {}}  # criterion -> model -> value
    for g, v in groups.items():
        for kind, value, better in (("fastest", v[5], max), ("cheapest", v[6], min)):
            if value is not None:
                old = top[kind].get(g[0])
                top[kind][g[0]] = value if old is None else better(old, value)
    select = f"""SELECT l.model, l.gpu, l.node_name, l.backend, l.precision, l.batch_size, l.concurrency,
            l.throughput_ips, l.p99_ms, l.cost_per_million, res.utilization_pct, res.power_w
        FROM {groups.table} l JOIN results res ON res.id = l.result_id
        WHERE l.{SWEEP} AND {stable} {"" if budget is None else "AND l.p99_ms <= :budget"}"""
    args = {"max_cv": groups.max_cv_pct, "budget": budget}
    picked: dict[tuple[str, str], tuple] = {}
    for kind, col, i in (("fastest", "throughput_ips", 5), ("cheapest", "cost_per_million", 6)):
        if conn.dialect.name == "sqlite":  # an index seek per group that holds its model's best value
            stmt = text(select + "".join(f" AND l.{k} = :{k}" for k in SWEEP_KEY) + f" AND l.{col} = :value")
            found = (r for g, v in groups.items() if v[i] is not None and v[i] == top[kind][g[0]]
                     for r in conn.execute(stmt, {**args, **dict(zip(SWEEP_KEY, g)), "value": v[i]}))
        elif top[kind]:  # PostgreSQL keeps no summary index: one scan for every model
            wanted = list(top[kind].items())
            values = ", ".join(f"(:m{j}, :v{j})" for j in range(len(wanted)))
            found = conn.execute(text(select + f" AND (l.model, l.{col}) IN (VALUES {values})"), {
                **args, **{f"m{j}": m for j, (m, _) in enumerate(wanted)},
                **{f"v{j}": v for j, (_, v) in enumerate(wanted)}})
        else:
            found = ()
        for r in map(tuple, found):
            if (r[0], kind) not in picked or r[1:7] < picked[(r[0], kind)][1:7]:
                picked[(r[0], kind)] = r
    out = []
    for model in sorted({g[0] for g in groups}):
        for kind in ("fastest", "cheapest"):
            found = picked.get((model, kind))
            if found is not None:  # (model, gpu, node, ...): BEST_FIELDS' order, watts made inferences/s/W
                _m, gpu, node, backend, precision, bs, conc, ips, p99, cost, util, watts = found
                found = (node, gpu, backend, precision, bs, conc, ips, p99, cost, util, ips / watts if watts else None)
            out.append(best_entry(model, kind, found, budget, model in top["fastest"]))
    return out


def sweep_rows(conn, table: str, max_cv_pct: float, where: str = "", params: dict | None = None) -> list[tuple]:
    """Row-ordered tuples of the newest sweep results (``where``: more conditions on ``l``)."""
    sql = ROWS_SQL.format(table=table, sweep=SWEEP, where=where, stable=STABLE.format(p="l."))
    out = []
    for t in conn.execute(text(sql), {"max_cv": max_cv_pct, **(params or {})}):
        created = t[14]
        out.append((*t[:12], bool(t[12]), t[13], datetime.fromisoformat(created) if isinstance(created, str)
                    else created, *t[15:], t[9] / t[21] if t[21] else None))
    return out


def figure_rows(conn, table: str, max_cv_pct: float, model: str) -> Callable[..., list[tuple]]:
    """``fetch(concurrency, gpu=None, backend=None, batch_size=None)``: the model's rows at
    that concurrency (and GPU, backend, batch), for ``plots.model_series_from_summary``."""
    def fetch(conc: int, gpu: str | None = None, backend: str | None = None, bs: int | None = None) -> list[tuple]:
        conds, params = [" AND l.model = :model AND l.concurrency = :conc"], {"model": model, "conc": conc}
        for col, value in (("gpu", gpu), ("backend", backend), ("batch_size", bs)):
            if value is not None:
                conds.append(f" AND l.{col} = :{col}")
                params[col] = value
        return sweep_rows(conn, table, max_cv_pct, "".join(conds), params)
    return fetch


# ----------------------------------------------------------------- MLPerf scenarios
SCENARIO_ROWS_SQL = """SELECT l.node_name, l.gpu, l.model, l.backend, l.precision, l.batch_size, l.scenario,
       l.scenario_valid, l.scenario_metric, l.run_id, res.created_at, res.format
FROM {table} l JOIN results res ON res.id = l.result_id WHERE l.{scenario}{where}"""


def newest_scenarios(conn, table: str, invalid_only: bool = False) -> list[tuple]:
    """``scenarios.SCENARIOS_SQL``-shaped tuples of the newest scenario results."""
    sql = SCENARIO_ROWS_SQL.format(table=table, scenario=SCENARIO,
                                   where=" AND NOT l.scenario_valid" if invalid_only else "")
    return [tuple(r) for r in conn.execute(text(sql))]


def scenario_summary(conn, table: str) -> tuple[list[dict], list[dict]]:
    """``scenarios._summaries``: per model × scenario × GPU × backend × precision × batch the
    VALID/INVALID counts, median and best VALID value; per model × scenario the best VALID
    result (ties to the first group in the summary's order, then by node)."""
    cols = ", ".join(SCENARIO_KEY)
    groups = {tuple(r[:6]): r[6:] for r in conn.execute(text(
        f"SELECT {cols}, COUNT(*), SUM(CASE WHEN scenario_valid THEN 1 ELSE 0 END), "
        f"MIN(CASE WHEN scenario_valid THEN scenario_metric END), "
        f"MAX(CASE WHEN scenario_valid THEN scenario_metric END) FROM {table} WHERE {SCENARIO} GROUP BY {cols}"))}
    med = medians(conn, table, "scenario_metric", f"{SCENARIO} AND scenario_valid = :valid", SCENARIO_KEY,
                  {g: v[1] for g, v in groups.items()}, {"valid": True})
    summary, best = [], {}
    for g in sorted(groups, key=lambda g: (g[0], RANK.get(g[1], 9), *g[1:])):
        model, scenario, gpu, backend, precision, bs = g
        n, valid, lo, hi = groups[g]
        _metric, unit, higher = METRIC.get(scenario, (scenario, "", True))
        value = (hi if higher else lo) if valid else None
        summary.append({"model": model, "scenario": scenario, "gpu": gpu, "backend": backend,
                        "precision": precision, "batch_size": bs, "nodes": n, "valid": int(valid),
                        "invalid": n - int(valid), "unit": unit, "median": med.get(g), "best": value})
        b = best.get((model, scenario))
        if value is not None and (b is None or (value > b if higher else value < b)):
            best[(model, scenario)] = value
    pick = text(f"""SELECT gpu, backend, precision, batch_size, node_name FROM {table}
        WHERE {SCENARIO} AND scenario_valid = :valid AND model = :model AND scenario = :scenario
          AND scenario_metric = :value""")
    ranked = []
    for model, scenario in sorted({(g[0], g[1]) for g in groups}, key=lambda x: (x[0], RANK.get(x[1], 9), x[1])):
        value = best.get((model, scenario))
        node = gpu = backend = bs = None
        if value is not None:
            gpu, backend, _precision, bs, node = min(tuple(r) for r in conn.execute(pick, {
                "valid": True, "model": model, "scenario": scenario, "value": value}))
        ranked.append({"model": model, "scenario": scenario, "node": node, "gpu": gpu, "backend": backend,
                       "batch_size": bs, "value": value, "unit": METRIC.get(scenario, ("", "", True))[1],
                       "note": "" if value is not None else "no VALID result"})
    return summary, ranked
