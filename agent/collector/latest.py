"""Keep ``latest_results`` — the newest result of every configuration — up to date.

Ingest only queues each stored run in ``latest_pending`` (one small row, in its own
transaction: a duplicate delivery or a rollback queues nothing); ``fold_pending``
folds the queued runs in batches — the collector in a background thread once no
document arrived for IDLE_S (``Folder``), the fleet report before it reads, so a
report is exact whenever it runs — and ``ingest_many`` (the bulk loader) folds its
batch at once. The per-document work of keeping the table (an upsert of every
result, several index entries each) stays off the ingest's hot path; in a batch it
is set-based SQL.

A row's configuration key is (node, model, backend, precision, batch, concurrency,
scenario — see ``tables.latest_results``), its effective time min(result created_at,
run received_at); a stored row is replaced only by a newer one — greater effective
time, ties by greater result id — so documents may arrive, and be folded, in any
order. Tuning points never enter. A sweep row's speedup is throughput / the eager
row's of the same node, model, precision, batch and concurrency (on images for an
image row), else of its fp32 eager (an eager result may arrive after the rows it is
the base of); an eager throughput of 0 counts as none. Scenario rows have none.

A batch (``update_latest``): two SQL statements over its runs — an upsert of the newest
result per key (``ROW_NUMBER()``: PostgreSQL refuses to update a row twice in one
statement), then the speedups of the runs' nodes × models recomputed from the stored
rows (only rows whose speedup changes are written). Both read only the rows of those
nodes and models (index seeks on ``ix_results_run`` and the primary key), whatever
the table's size. On PostgreSQL several folders (collector workers, a report) take
disjoint batches (``FOR UPDATE SKIP LOCKED``) and lock the batch's nodes (sorted) so
that two batches of one node never recompute its speedups side by side."""

from __future__ import annotations

import threading
import time

from sqlalchemy import Engine, bindparam, text

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


FOLD_BATCH = 200  # runs per fold transaction (SQLite: the write lock is held that long)
IDLE_S = 0.5  # the collector folds once no document arrived for this long
_PENDING = {
    "sqlite": "SELECT run_id, node_name FROM latest_pending ORDER BY run_id LIMIT :n",
    "postgresql": "SELECT run_id, node_name FROM latest_pending ORDER BY run_id LIMIT :n FOR UPDATE SKIP LOCKED",
}
_LOCK_NODES = text("SELECT name FROM nodes WHERE name IN :nodes ORDER BY name FOR UPDATE").bindparams(
    bindparam("nodes", expanding=True))
_MODELS = text("SELECT DISTINCT model FROM results WHERE run_id IN :ids").bindparams(
    bindparam("ids", expanding=True))
_DONE = text("DELETE FROM latest_pending WHERE run_id IN :ids").bindparams(bindparam("ids", expanding=True))


def fold_pending(engine: Engine, batch: int = FOLD_BATCH, until: float | None = None) -> int:
    """Fold the queued runs into latest_results, a transaction per ``batch`` runs, until
    none is left (or ``until``, a ``time.monotonic()`` deadline, has passed); the number of
    runs folded. Runs another folder holds (PostgreSQL) are skipped: that one folds them."""
    folded = 0
    while until is None or time.monotonic() < until:
        with engine.begin() as conn:
            rows = conn.execute(text(_PENDING[conn.dialect.name]), {"n": batch}).all()
            if not rows:
                break
            ids, nodes = [r[0] for r in rows], sorted({r[1] for r in rows})
            if conn.dialect.name == "postgresql":
                conn.execute(_LOCK_NODES, {"nodes": nodes})
            models = {m for (m,) in conn.execute(_MODELS, {"ids": ids})}
            update_latest(conn, ids, set(nodes), models)
            conn.execute(_DONE, {"ids": ids})
        folded += len(ids)
    return folded


class Folder:
    """The collector's background folder: ``poke()`` after each stored document; a daemon
    thread folds the queue once no document arrived for ``idle_s`` (between batches too),
    so that ingest keeps the machine while documents stream in."""

    def __init__(self, engine: Engine, idle_s: float = IDLE_S) -> None:
        self.engine, self.idle_s = engine, idle_s
        self._last = time.monotonic()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def poke(self) -> None:
        with self._lock:
            self._last = time.monotonic()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="latest-folder", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        import logging

        while True:
            quiet = time.monotonic() - self._last
            if quiet < self.idle_s:
                time.sleep(self.idle_s - quiet)
                continue
            try:
                if fold_pending(self.engine, until=time.monotonic() + self.idle_s) == 0:
                    with self._lock:  # nothing left: a later poke starts a new thread
                        if time.monotonic() - self._last >= self.idle_s:
                            self._thread = None
                            return
            except Exception:  # the queue stays: the next document (or the report) folds it
                logging.getLogger("inferfleet.collector").exception("folding latest_pending failed")
                with self._lock:
                    self._thread = None
                return
