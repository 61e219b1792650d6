"""Keep ``latest_results`` — the newest result of every configuration — at ingest.

In the ingest's own transaction, after the results were inserted (so a duplicate
delivery or a rollback leaves the table as it was). A row's configuration key is
(node, model, backend, precision, batch, concurrency, scenario — see
``tables.latest_results``), its effective time min(result created_at, run
received_at); a stored row is replaced only by a newer one — greater effective time,
ties by greater result id — so documents may arrive in any order. Tuning points never
enter. A sweep row's speedup is throughput / the eager row's of the same node, model,
precision, batch and concurrency (on images for an image row), else of its fp32 eager
(an eager result may arrive after the rows it is the base of); an eager throughput of 0
counts as none. Scenario rows have none. Only rows that change are written.

One document (``ingest.store_results``, the collector's hot path): its rows are
already in Python (``latest_rows``). The stored newest rows of its node × models (on
PostgreSQL returned by the run's insert, ``stored_json``; a primary-key prefix seek) are
merged with them here (``merge``: which rows are newer, their speedups, the stored rows
whose eager base changed), then one upsert writes the newer rows — guarded by the same
"newer" condition — and, only when an eager row of the document changed the base of
stored rows, an update sets those (``write_latest``). Every ingest of a node first
upserts its ``nodes`` row, which locks it to the end of the transaction: the rows read
stay the node's newest until the commit. Static statement text (PostgreSQL: the rows as
one JSON parameter), so the driver prepares each once per connection.

A batch (``update_latest``, the bulk loader): two SQL statements over the inserted
runs — an upsert of the newest result per key (``ROW_NUMBER()``: PostgreSQL refuses to
update a row twice in one statement), then the speedups of the runs' nodes × models
recomputed from the stored rows. Both read only the rows of those nodes and models
(index seeks on ``ix_results_run`` and the primary key), whatever the table's size.
Plain SQL that SQLite and PostgreSQL parse alike, compiled once per process."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import ARRAY, String, any_, bindparam, func, select, text

from agent.collector.tables import LATEST_KEY, latest_results

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


# --- one document, merged in Python -------------------------------------------------------

# what the merge reads of a stored row: its key, effective time, result id, throughput, speedup
STORED = (*LATEST_KEY, "effective_at", "result_id", "throughput_ips", "speedup_vs_eager")
_ROW_COLUMNS = (*COLUMNS, "speedup_vs_eager")
_SET = ", ".join(f"{c} = excluded.{c}" for c in _ROW_COLUMNS if c not in LATEST_KEY)
_NEWER = ("excluded.effective_at > latest_results.effective_at OR (excluded.effective_at = "
          "latest_results.effective_at AND excluded.result_id > latest_results.result_id)")
_SQL = {
    "postgresql": {
        # one statement whatever the number of rows: the rows as one JSON array of objects
        # (json.dumps writes floats exactly; PostgreSQL reads them back exactly)
        "upsert": f"INSERT INTO latest_results ({', '.join(_ROW_COLUMNS)}) SELECT {', '.join(_ROW_COLUMNS)} "
                  f"FROM json_populate_recordset(NULL::latest_results, %s) "
                  f"ON CONFLICT ({_key}) DO UPDATE SET {_SET} WHERE {_NEWER}",
        "speedup": "UPDATE latest_results SET speedup_vs_eager = %s WHERE "
                   + " AND ".join(f"{c} = %s" for c in LATEST_KEY),
    },
    "sqlite": {
        "stored": f"SELECT {', '.join(STORED)} FROM latest_results "
                  "WHERE node_name = ? AND model IN (SELECT value FROM json_each(?))",
        "upsert": f"INSERT INTO latest_results ({', '.join(_ROW_COLUMNS)}) "
                  f"VALUES ({', '.join('?' * len(_ROW_COLUMNS))}) ON CONFLICT ({_key}) DO UPDATE SET {_SET} "
                  f"WHERE {_NEWER}",
        "speedup": "UPDATE latest_results SET speedup_vs_eager = ? WHERE "
                   + " AND ".join(f"{c} = ?" for c in LATEST_KEY),
    },
}


def stored_json():  # noqa: ANN201
    """PostgreSQL: the stored rows (``STORED``) of the node ``:node_name`` and the models
    ``:models`` as one JSON array of arrays — a scalar subquery that the run's insert
    returns (it runs after the node's upsert, which locks the node: see the module).
    Floats come back exact (PostgreSQL writes the shortest exact digits, since 12)."""
    c = latest_results.c
    return (select(func.json_agg(func.json_build_array(*(c[n] for n in STORED))))
            .where(c.node_name == bindparam("node_name"),
                   c.model == any_(bindparam("models", type_=ARRAY(String))))
            .scalar_subquery())


def stored_rows(conn, run: dict, models: list[str], returned) -> dict[tuple, tuple]:  # noqa: ANN001
    """The stored rows of the run's node and ``models``: key -> (effective_at (a naive
    datetime), result_id, throughput_ips, speedup_vs_eager). PostgreSQL: ``returned``,
    ``stored_json``'s array; SQLite: read here (the transaction holds its write lock)."""
    if conn.dialect.name == "postgresql":
        return {tuple(r[:7]): (datetime.fromisoformat(r[7]), *r[8:]) for r in returned or ()}
    cur = conn.connection.driver_connection.cursor()
    cur.execute(_SQL["sqlite"]["stored"], (run["node_name"], json.dumps(models)))
    from_db = latest_results.c.effective_at.type.dialect_impl(conn.dialect).result_processor(conn.dialect, None)
    return {tuple(r[:7]): (from_db(r[7]), *r[8:]) for r in cur.fetchall()}


def latest_rows(run: dict, rows: list[dict]) -> dict[tuple, dict]:
    """The newest row per key of one run's results (``rows``: ``ingest.result_rows`` with
    their ``id``, ascending; tuning points skipped): within a run all share one effective
    time, so the later result of a key — the greater id — is its newest."""
    out: dict[tuple, dict] = {}
    gpu, price = run["gpu_name"] or "cpu", run["price_per_hour"]
    prefix = "triton-" if run["target"] == "triton" else ""
    for r in rows:
        if r["tuning"] is not None:
            continue
        scenario = r["scenario"] or ""
        backend = prefix + r["format"] + (" images" if r["input"] == "image" else "")
        key = (r["node_name"], r["model"], backend, r["precision"], r["batch_size"],
               0 if scenario else r["concurrency"], scenario)
        ips = r["throughput_ips"]
        out[key] = dict(zip(LATEST_KEY, key, strict=True), result_id=r["id"], run_id=r["run_id"],
                        effective_at=min(r["created_at"], run["received_at"]), gpu=gpu,
                        price_per_hour=price, throughput_ips=ips, p99_ms=r["p99_ms"], stable=r["stable"],
                        cv_pct=r["cv_pct"], scenario_valid=r["scenario_valid"], scenario_metric=r["scenario_metric"],
                        cost_per_million=None if price is None or ips <= 0 else price / (ips * 3600.0) * 1e6)
    return out


def speedup_of(key: tuple, ips: dict[tuple, float]) -> float | None:
    """The speedup of the row ``key`` among the rows whose throughputs are ``ips`` (the
    same node and model at least): as the SQL of ``speedup_sql``."""
    node, model, backend, precision, batch, conc, scenario = key
    if scenario:
        return None
    eager = "eager images" if backend.endswith(" images") else "eager"
    base = ips.get((node, model, eager, precision, batch, conc, "")) or ips.get((node, model, eager, "fp32", batch,
                                                                                 conc, ""))
    return ips[key] / base if base else None


def merge(new: dict[tuple, dict], stored: dict[tuple, tuple]) -> tuple[list[dict], list[tuple]]:
    """The rows of ``new`` (``latest_rows``) newer than the stored ones, with their
    speedups, and (speedup, *key) of the stored rows that stay but whose speedup changes
    (an eager row of this run is their base now)."""
    won = {k: v for k, v in new.items() if k not in stored or (v["effective_at"], v["result_id"]) > stored[k][:2]}
    ips = {k: v[2] for k, v in stored.items()} | {k: v["throughput_ips"] for k, v in won.items()}
    for k, v in won.items():
        v["speedup_vs_eager"] = speedup_of(k, ips)
    changed = []
    if any(k[2].startswith("eager") for k in won):
        changed = [(s, *k) for k, v in stored.items() if k not in won and (s := speedup_of(k, ips)) != v[3]]
    return list(won.values()), changed


def write_latest(conn, won: list[dict], changed: list[tuple]) -> None:  # noqa: ANN001
    """Upsert ``won`` and set the ``changed`` speedups (``merge``), through the driver."""
    cur = conn.connection.driver_connection.cursor()
    if won and conn.dialect.name == "postgresql":
        cur.execute(_SQL["postgresql"]["upsert"], (json.dumps([{**v, "effective_at": v["effective_at"].isoformat()}
                                                               for v in won]),))
    elif won:
        to_db = latest_results.c.effective_at.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
        cur.executemany(_SQL["sqlite"]["upsert"], [[to_db(v[c]) if c == "effective_at" else v[c]
                                                    for c in _ROW_COLUMNS] for v in won])
    if changed:
        cur.executemany(_SQL[conn.dialect.name]["speedup"], changed)
