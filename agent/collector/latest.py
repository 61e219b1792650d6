"""Keep ``latest_results`` — the newest result of every configuration — at ingest.

Two statements in the ingest's own transaction, after the results of some runs
were inserted (so a duplicate delivery or a rollback leaves the table as it was):

1. An upsert of those runs' results (tuning points excluded): each result's
   configuration key (node, model, backend, precision, batch, concurrency,
   scenario — see ``tables.latest_results``) and its effective time,
   min(result created_at, run received_at). Within the statement the newest per
   key is kept (``ROW_NUMBER()``: PostgreSQL refuses to update a row twice in one
   statement); a stored row is replaced only by a newer one — greater effective
   time, ties by greater result id — so documents may arrive in any order.
2. The speedup over eager of every sweep row of the nodes × models concerned,
   recomputed from the stored newest rows: throughput / the eager row's of the
   same node, model, precision, batch and concurrency (on images for an image
   row), else of its fp32 eager (an eager result may arrive after the rows it is
   the base of). Scenario rows have none.

Cost: both statements read only the rows of the runs' nodes and models (index
seeks on ``ix_results_run`` and the primary key), whatever the table's size, and
write only rows that change.
Plain SQL that SQLite and PostgreSQL parse alike, compiled once per process."""

from __future__ import annotations

from sqlalchemy import bindparam, text

from agent.collector.tables import LATEST_KEY

# the columns written from a result (speedup_vs_eager: statement 2)
COLUMNS = (*LATEST_KEY, "result_id", "run_id", "effective_at", "gpu", "price_per_hour", "throughput_ips",
           "p99_ms", "stable", "cv_pct", "cost_per_million", "scenario_valid", "scenario_metric")

# one row per result of the runs, with its key and effective time; SQLite compares the
# stored times as text (SQLAlchemy's fixed format), PostgreSQL as timestamps
RESULT_ROWS = """
SELECT res.node_name, res.model,
       CASE WHEN ru.target = 'triton' THEN 'triton-' || res.format ELSE res.format END
         || CASE WHEN res.input = 'image' THEN ' images' ELSE '' END AS backend,
       res.precision, res.batch_size,
       CASE WHEN res.scenario IS NULL THEN res.concurrency ELSE 0 END AS concurrency,
       COALESCE(res.scenario, '') AS scenario,
       res.id AS result_id, res.run_id,
       CASE WHEN res.created_at > ru.received_at THEN ru.received_at ELSE res.created_at END AS effective_at,
       COALESCE(ru.gpu_name, 'cpu') AS gpu, ru.price_per_hour, res.throughput_ips, res.p99_ms, res.stable,
       res.cv_pct,
       CASE WHEN ru.price_per_hour IS NULL OR res.throughput_ips <= 0 THEN NULL
            ELSE ru.price_per_hour / (res.throughput_ips * 3600.0) * 1e6 END AS cost_per_million,
       res.scenario_valid, res.scenario_metric
FROM results res JOIN runs ru ON ru.id = res.run_id
WHERE res.run_id IN :run_ids AND res.tuning IS NULL"""

_key = ", ".join(LATEST_KEY)
_cols = ", ".join(COLUMNS)
UPSERT = f"""
INSERT INTO latest_results ({_cols})
SELECT {_cols} FROM (
  SELECT r.*, ROW_NUMBER() OVER (PARTITION BY {_key} ORDER BY effective_at DESC, result_id DESC) AS rn
  FROM ({RESULT_ROWS}) r
) newest
WHERE rn = 1
ON CONFLICT ({_key}) DO UPDATE SET
  {", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in LATEST_KEY)}
WHERE excluded.effective_at > latest_results.effective_at
   OR (excluded.effective_at = latest_results.effective_at AND excluded.result_id > latest_results.result_id)"""


def eager_ips(table: str, precision: str) -> str:
    """The throughput of the eager row that the sweep row ``l`` of ``table`` is compared with."""
    return f"""(SELECT e.throughput_ips FROM {table} e
     WHERE e.node_name = l.node_name AND e.model = l.model
       AND e.backend = CASE WHEN l.backend LIKE '% images' THEN 'eager images' ELSE 'eager' END
       AND e.precision = {precision} AND e.batch_size = l.batch_size
       AND e.concurrency = l.concurrency AND e.scenario = '')"""


def speedup_sql(table: str = "latest_results", scope: str = "") -> str:
    """UPDATE of the speedups of ``table``'s sweep rows (those matching ``scope``, SQL on
    its columns; all when empty) to throughput / their eager base. NULLIF(x, 0): an eager
    throughput of 0 counts as none, as Python's ``a or b`` in the report. Only rows whose
    speedup changes are written (an UPDATE writes a row version even when nothing
    changes): ``a <> b OR (a IS NULL) <> (b IS NULL)`` is IS DISTINCT FROM, which SQLite
    has only since 3.39."""
    inner = f" AND {scope.replace('{t}', 'l')}" if scope else ""
    outer = f" AND {scope.replace('{t}', table)}" if scope else ""
    key = " AND ".join(f"{table}.{c} = s.{c}" for c in
                       ("node_name", "model", "backend", "precision", "batch_size", "concurrency"))
    return f"""
UPDATE {table} SET speedup_vs_eager = s.speedup
FROM (
  SELECT l.node_name, l.model, l.backend, l.precision, l.batch_size, l.concurrency,
         l.throughput_ips / COALESCE(NULLIF({eager_ips(table, "l.precision")}, 0),
                                     NULLIF({eager_ips(table, "'fp32'")}, 0)) AS speedup
  FROM {table} l
  WHERE l.scenario = ''{inner}
) s
WHERE {table}.scenario = ''{outer} AND {key}
  AND ({table}.speedup_vs_eager <> s.speedup
       OR ({table}.speedup_vs_eager IS NULL) <> (s.speedup IS NULL))"""


# the runs' nodes × models, as values: the primary key's leading columns
SPEEDUP = speedup_sql(scope="{t}.node_name IN :nodes AND {t}.model IN :models")
_UPSERT = text(UPSERT).bindparams(bindparam("run_ids", expanding=True))
_SPEEDUP = text(SPEEDUP).bindparams(bindparam("nodes", expanding=True), bindparam("models", expanding=True))
CHUNK = 500  # run ids per statement (bound parameters)


def update_latest(conn, run_ids: list[str], nodes: set[str], models: set[str]) -> None:  # noqa: ANN001
    """Fold the results of ``run_ids`` (inserted in the open transaction ``conn``) into
    latest_results, then recompute the speedups of ``nodes`` × ``models`` (those of the
    runs, given as values: the primary key's leading columns, seeked whatever the table's
    size; a few rows more than needed, each set to its right value)."""
    for i in range(0, len(run_ids), CHUNK):
        conn.execute(_UPSERT, {"run_ids": list(run_ids[i:i + CHUNK])})
    conn.execute(_SPEEDUP, {"nodes": sorted(nodes), "models": sorted(models)})


def refresh_speedups(conn, table: str) -> None:  # noqa: ANN001
    """Recompute every speedup of ``table`` (a copy of latest_results: the fleet report's
    ``--since`` window, where an eager result older than the window is no baseline)."""
    conn.execute(text(speedup_sql(table)))
