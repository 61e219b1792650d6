"""Store one result document exactly once.

The document id is the runs table's primary key: one transaction upserts the
node, inserts the run with ``ON CONFLICT (id) DO NOTHING`` and, only when that
inserted a row, bulk-inserts the results and queues the run for the newest result
per configuration (``latest_pending``, folded later: ``agent.collector.latest``;
``ingest_many`` folds its batch at once). A second delivery of the same
document (a pusher that lost the acknowledgement, two pushers racing, two
collector workers) inserts nothing, rolls back and is reported as a duplicate
— no extra SELECT on the hot path."""

from __future__ import annotations

from datetime import UTC, datetime
from operator import itemgetter

from sqlalchemy import Engine, bindparam, case, func, insert, select

from agent.collector.latest import update_latest
from agent.collector.tables import STACK_FIELDS, latest_pending, nodes, results, runs
from agent.schema import BenchResult, NodeFacts, ResultDocument


def to_utc_naive(t: datetime) -> datetime:
    if t.tzinfo is None:
        return t
    return t.astimezone(UTC).replace(tzinfo=None)


def stack_of(node: NodeFacts) -> str:
    """The versions a playbook upgrade changes, as one comparable string."""
    return " ".join(f"{label}={(getattr(node, col) or '-').replace(' ', '_')}" for label, col in STACK_FIELDS)


def _dialect_insert(conn):  # noqa: ANN001, ANN202
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert


NODE_COLUMNS = ("name", "hostname", "cloud", "region", "instance_type", "price_per_hour", "gpu_name",
                "gpu_count", "first_seen", "last_seen", "facts")
_STATEMENTS: dict[tuple[str, str], object] = {}  # (dialect, kind) -> statement built once, run with parameters


def _statement(conn, kind: str):  # noqa: ANN001, ANN202
    """The node upsert and the run insert, built once per dialect (building them costs more
    than running them); executed with a parameter dict."""
    key = (conn.dialect.name, kind)
    if key not in _STATEMENTS:
        sqlite = conn.dialect.name == "sqlite"
        if kind == "node":
            stmt = _dialect_insert(conn)(nodes).values({k: bindparam(k) for k in NODE_COLUMNS})
            newer = stmt.excluded.last_seen >= nodes.c.last_seen
            keep_newest = [k for k in NODE_COLUMNS if k not in ("name", "first_seen", "last_seen")]
            lo, hi = (func.min, func.max) if sqlite else (func.least, func.greatest)
            _STATEMENTS[key] = stmt.on_conflict_do_update(index_elements=[nodes.c.name], set_={
                **{k: case((newer, stmt.excluded[k]), else_=nodes.c[k]) for k in keep_newest},
                "first_seen": lo(nodes.c.first_seen, stmt.excluded.first_seen),
                "last_seen": hi(nodes.c.last_seen, stmt.excluded.last_seen),
            })
        elif kind == "run":  # nothing when the id is already stored; RETURNING tells (rowcount is -1 with psycopg)
            stmt = _dialect_insert(conn)(runs).values({c.name: bindparam(c.name) for c in runs.c})
            _STATEMENTS[key] = stmt.on_conflict_do_nothing(index_elements=[runs.c.id]).returning(runs.c.id)
        else:  # pending: the run, queued for agent.collector.latest.fold_pending
            _STATEMENTS[key] = insert(latest_pending).values(run_id=bindparam("run_id"),
                                                             node_name=bindparam("node_name"))
    return _STATEMENTS[key]


_COMPILED: dict[str, tuple[str, dict]] = {}  # kind -> PostgreSQL SQL and its constant parameters


def _execute(conn, kind: str, params: dict):  # noqa: ANN001, ANN202
    """Run the statement ``kind`` (``_statement``); its first row, or None. PostgreSQL:
    through the driver, compiled once (SQLAlchemy's execution costs as much again as the
    statement's); SQLite: through SQLAlchemy (its types write SQLite's text formats)."""
    if conn.dialect.name != "postgresql":
        result = conn.execute(_statement(conn, kind), params)
        return result.first() if result.returns_rows else None
    if kind not in _COMPILED:
        compiled = _statement(conn, kind).compile(dialect=conn.dialect)
        _COMPILED[kind] = compiled.string, {k: v for k, v in compiled.params.items() if v is not None}
    sql, constants = _COMPILED[kind]
    cur = conn.connection.driver_connection.execute(sql, {**constants, **params})
    return cur.fetchone() if cur.description else None


def _upsert_node(conn, doc: ResultDocument, created: datetime) -> None:
    """Insert the node, or update it with this document's facts when they are the newest."""
    n = doc.node
    _execute(conn, "node", {
        "name": n.node_name, "hostname": n.hostname, "cloud": n.cloud, "region": n.region,
        "instance_type": n.instance_type, "price_per_hour": n.price_per_hour,
        "gpu_name": n.gpu_name, "gpu_count": n.gpu_count, "first_seen": created,
        "last_seen": created, "facts": n.model_dump_json(),
    })


def run_row(doc: ResultDocument, received: datetime) -> dict:
    n = doc.node
    row = {
        "id": doc.id, "node_name": n.node_name, "created_at": to_utc_naive(doc.created_at),
        "received_at": received, "target": doc.target, "hostname": n.hostname,
        "instance_type": n.instance_type, "gpu_name": n.gpu_name, "price_per_hour": n.price_per_hour,
        "stack": stack_of(n), "result_count": len(doc.results),
        "document": doc.model_dump_json(),
    }
    for _label, col in STACK_FIELDS:
        row[col] = getattr(n, col)
    return row


def result_rows(doc: ResultDocument) -> list[dict]:
    created = to_utc_naive(doc.created_at)
    return [
        {
            "run_id": doc.id, "node_name": doc.node.node_name, "created_at": created,
            "model": r.model, "format": r.format, "precision": r.precision, "device": r.device,
            "batch_size": r.batch_size, "concurrency": r.concurrency,
            "throughput_ips": r.throughput_ips, "p50_ms": r.latency_ms.p50,
            "p90_ms": r.latency_ms.p90, "p95_ms": r.latency_ms.p95, "p99_ms": r.latency_ms.p99,
            "mean_ms": r.latency_ms.mean, "stable": r.stable,
            "scenario": r.scenario.name if r.scenario else None,
            "scenario_valid": r.scenario.valid if r.scenario else None,
            "scenario_metric": r.scenario.metric_value if r.scenario else None,
            "cv_pct": r.cv_pct, "input": r.input,
            "tuning": r.tuning.model_dump_json() if r.tuning else None,  # 1.2 (migration 0003)
            "tuning_chosen": r.tuning.chosen if r.tuning else None,
            **telemetry_columns(r),
        }
        for r in doc.results
    ]


def telemetry_columns(r: BenchResult) -> dict:
    """queue/compute per request (Triton's metrics, else its statistics API), power and
    utilisation (the node's own samples, else what Triton reported)."""
    sm, sb, t = r.server_metrics, r.server, r.telemetry
    split = sm or sb
    power = (t.gpu_power_w if t else None) or (sm.gpu_power_w if sm else None)
    util = None
    if t is not None:
        util = t.gpu_utilization_pct if t.source == "nvml" else t.cpu_utilization_pct
    if util is None and sm is not None:
        util = sm.gpu_utilization_pct
    return {
        "queue_us": split.queue_us if split else None,
        "compute_us": split.compute_input_us + split.compute_infer_us + split.compute_output_us if split else None,
        "power_w": power, "utilization_pct": util,
    }


def insert_results(conn, rows: list[dict]) -> None:  # noqa: ANN001
    """Bulk-insert result rows (dicts with the same keys) in the open transaction.

    Through the driver, not SQLAlchemy's per-row parameter processing: PostgreSQL
    gets one ``COPY ... FROM STDIN`` (psycopg adapts each value by its Python type),
    SQLite one ``executemany`` of tuples. Datetimes are naive UTC either way; SQLite
    gets them in SQLAlchemy's own text format, so that its reads see the same values."""
    if not rows:
        return
    cols = list(rows[0])
    dbapi = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        with dbapi.cursor() as cur, cur.copy(f"COPY results ({', '.join(cols)}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row([r[c] for c in cols])
        return
    get = itemgetter(*cols)  # a result row has some 30 columns: get returns a tuple
    convert = [(i, p) for i, c in enumerate(cols)
               if (p := results.c[c].type.dialect_impl(conn.dialect).bind_processor(conn.dialect)) is not None]
    params = [get(r) for r in rows]
    if convert:  # a document's rows share most converted values (its time): convert each once
        cache: dict = {}
        for k, t in enumerate(params):
            t = list(t)
            for i, p in convert:
                if t[i] is not None:
                    if (i, t[i]) not in cache:
                        cache[(i, t[i])] = p(t[i])
                    t[i] = cache[(i, t[i])]
            params[k] = t
    sql = f"INSERT INTO results ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    dbapi.cursor().executemany(sql, params)


class _Duplicate(Exception):
    pass


def ingest(engine: Engine, doc: ResultDocument) -> bool:
    """Store ``doc``; True when it was new, False when its id was already stored."""
    received = to_utc_naive(datetime.now(UTC))
    try:
        with engine.begin() as conn:
            _upsert_node(conn, doc, to_utc_naive(doc.created_at))
            if _execute(conn, "run", run_row(doc, received)) is None:
                raise _Duplicate  # rolls the node upsert back too: a duplicate changes nothing
            insert_results(conn, result_rows(doc))
            _execute(conn, "pending", {"run_id": doc.id, "node_name": doc.node.node_name})
    except _Duplicate:
        return False
    return True


def ingest_many(engine: Engine, docs, received_at=None) -> int:  # noqa: ANN001
    """Bulk load (benchmarks, report from a collector): one transaction per batch.

    ``received_at``: optional, one time per document (None: now) — when the
    documents were received elsewhere first, e.g. by the collector that the
    fleet report mirrors, whose arrival times the report's "newest" ordering
    relies on (a run is never newer than its arrival)."""
    now = to_utc_naive(datetime.now(UTC))
    count = 0
    with engine.begin() as conn:
        existing = set()
        batch = list(docs)
        if received_at is None:
            received = {}
        else:
            times = list(received_at)
            if len(times) != len(batch):
                raise ValueError(f"ingest_many: {len(times)} received_at times for {len(batch)} documents")
            received = {d.id: to_utc_naive(t) for d, t in zip(batch, times) if t is not None}
        ids = [d.id for d in batch]
        for i in range(0, len(ids), 500):
            existing |= {r[0] for r in conn.execute(select(runs.c.id).where(runs.c.id.in_(ids[i:i + 500])))}
        fresh = [d for d in batch if d.id not in existing]
        for d in sorted(fresh, key=lambda d: d.created_at):
            _upsert_node(conn, d, to_utc_naive(d.created_at))
        if fresh:
            conn.execute(insert(runs), [run_row(d, received.get(d.id, now)) for d in fresh])
            insert_results(conn, [r for d in fresh for r in result_rows(d)])
            update_latest(conn, [d.id for d in fresh], {d.node.node_name for d in fresh},
                          {r.model for d in fresh for r in d.results})
        count = len(fresh)
    return count
