"""latest_results, kept at ingest (agent.collector.latest), against references computed
independently from the stored results: a Python pass over results × runs (the fleet
report's definition of "newest", speedup and cost) and the report's reference queries
(``LATEST_SQL``, ``SCENARIOS_SQL``). Documents arrive one at a time (``ingest``) and in
batches (``ingest_many``), out of order, from the future, served and in-process, with
image requests, fp16 with and without an fp16 eager, eager after the rest, scenarios
and tuning points. Also: the 0004 migration's backfill of a database holding results."""

from __future__ import annotations

import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collector_support import *  # noqa: E402,F403

from agent.schema import BenchResult, BenchSettings, ResultDocument, TuningPoint  # noqa: E402
from testing.synthetic_fleet import fleet, make_node, make_result, make_scenario_result  # noqa: E402

T0 = datetime(2025, 3, 1, tzinfo=UTC)
FLOATS = ("price_per_hour", "throughput_ips", "p99_ms", "cv_pct", "cost_per_million", "speedup_vs_eager",
          "scenario_metric")


def res(model: str, fmt: str, batch: int = 1, conc: int = 1, precision: str = "fp32", seed: int = 0,
        **extra) -> BenchResult:
    r = make_result(model, fmt, batch, conc, 1.0, random.Random(f"{model}{fmt}{batch}{conc}{precision}{seed}"))
    r.precision = precision
    for k, v in extra.items():
        setattr(r, k, v)
    return r


def doc(node: int, results: list[BenchResult], minutes: float, target: str = "inprocess",
        **node_overrides) -> ResultDocument:
    return ResultDocument(created_at=T0 + timedelta(minutes=minutes), target=target,
                          node=make_node(node, **node_overrides), results=results,
                          settings=BenchSettings(warmup=1, window_seconds=1.0, stability_pct=10.0, max_windows=4))


def future(d: ResultDocument) -> ResultDocument:
    """``d`` claiming 2099 (the schema refuses that; stored rows from before it may not)."""
    d.created_at = datetime(2099, 1, 1, tzinfo=UTC)
    return d


def tuning_point(chosen: bool) -> TuningPoint:
    return TuningPoint(instances=1, max_batch_size=8, dynamic_batching=True, preferred_batch_sizes=[4, 8],
                       queue_delay_us=100, search="quick", p99_budget_ms=50.0, within_budget=True, chosen=chosen)


def hand_made() -> list[ResultDocument]:
    """In the order they are delivered."""
    rng = random.Random(7)
    fast = res("resnet18", "onnx", seed=2)
    fast.throughput_ips *= 3
    return [
        # node 1: onnx/tensorrt first, their fp32 eager a document later (speedup must appear then)
        doc(11, [res("resnet18", f, b) for f in ("onnx", "tensorrt") for b in (1, 8)], 0),
        doc(11, [res("resnet18", "eager", b) for b in (1, 8)], 1),
        # fp16: an fp16 eager at batch 1; none at batch 8 (fp32's is the base)
        doc(11, [res("resnet18", "onnx", 1, precision="fp16"), res("resnet18", "eager", 1, precision="fp16"),
                res("resnet18", "tensorrt", 8, precision="fp16")], 2),
        # served: its own backend (triton-onnx), compared with the in-process eager
        doc(11, [res("resnet18", "onnx", b, c) for b in (1, 8) for c in (1, 4)], 3, target="triton"),
        # image requests: their own backend, compared with eager on images only
        doc(11, [res("resnet18", "eager", 1, input="image"), res("resnet18", "onnx", 1, input="image"),
                res("resnet18", "tensorrt", 8, input="image")], 4),
        # the same configuration twice in one document: the later one (greater id) is newest
        doc(11, [res("resnet18", "onnx", seed=1), fast], 5),
        # node 2 out of order: the newer document first, the older must not replace it
        doc(12, [res("mobilenet_v2", f, seed=10) for f in ("eager", "onnx")], 30),
        doc(12, [res("mobilenet_v2", f, seed=11) for f in ("eager", "onnx", "tensorrt")], 20),
        # node 3 claims the year 2099 (effective at its arrival), then a real later document
        future(doc(13, [res("resnet50", f, seed=20) for f in ("eager", "onnx")], 0)),
        doc(13, [res("resnet50", f, seed=21) for f in ("eager", "onnx")], 40),
        # scenarios (valid and invalid) and tuning points (never in latest_results)
        doc(14, [make_scenario_result("resnet18", "onnx", s, 1.0, rng, valid=s != "server")
                for s in ("offline", "server", "single-stream")] + [res("resnet18", "eager")], 50),
        doc(14, [make_scenario_result("resnet18", "onnx", "server", 1.0, rng, valid=True)], 51, target="triton"),
        doc(14, [res("resnet18", "onnx", 8, tuning=tuning_point(c)) for c in (False, True)]
            + [res("resnet34", "onnx", 2, tuning=tuning_point(False))], 52, target="triton"),
        # no price, no GPU: cost NULL, gpu "cpu"
        doc(15, [res("resnet18", f) for f in ("eager", "onnx")], 55, price_per_hour=None, gpu_name=None,
            gpu_count=0),
        # node 16: eager alone, then an older document with eager and onnx: its onnx is new (kept),
        # its eager is not — the onnx speedup is over the newer eager of the other document
        doc(16, [res("mobilenet_v2", "eager", seed=30)], 61),
        doc(16, [res("mobilenet_v2", f, seed=31) for f in ("eager", "onnx")], 60),
        # an fp16 eager of throughput 0 is no base: the fp32 eager's (of the document before) is
        doc(16, [res("mobilenet_v2", "eager", precision="fp16", seed=32, throughput_ips=0.0),
                 res("mobilenet_v2", "onnx", precision="fp16", seed=32)], 62),
    ]


def documents() -> list[ResultDocument]:
    made = hand_made()
    synthetic = list(fleet(3, models=("resnet18", "mobilenet_v2"), formats=("eager", "onnx", "tensorrt"),
                           batch_sizes=(1, 8), concurrencies=(1, 2), start=T0 + timedelta(minutes=70)))
    return made + synthetic


# --- references ---------------------------------------------------------------------------

def stored(conn):  # noqa: ANN001, ANN201
    from sqlalchemy import select

    from agent.collector.tables import results, runs

    run = {r.id: r for r in conn.execute(select(runs.c.id, runs.c.target, runs.c.received_at, runs.c.gpu_name,
                                                runs.c.price_per_hour))}
    return run, list(conn.execute(select(results)).mappings())


def reference(conn) -> dict[tuple, dict]:  # noqa: ANN001
    """The newest result of every configuration as the fleet report defines it, in Python."""
    run, rows = stored(conn)
    newest: dict[tuple, tuple] = {}
    for r in rows:
        if r["tuning"] is not None:
            continue
        ru = run[r["run_id"]]
        backend = ("triton-" if ru.target == "triton" else "") + r["format"] + (" images" if r["input"] == "image"
                                                                               else "")
        scenario = r["scenario"] or ""
        key = (r["node_name"], r["model"], backend, r["precision"], r["batch_size"],
               0 if scenario else r["concurrency"], scenario)
        eff = min(r["created_at"], ru.received_at)
        if key not in newest or (eff, r["id"]) > newest[key][:2]:
            newest[key] = (eff, r["id"], r, ru)
    out = {}
    for key, (eff, rid, r, ru) in newest.items():
        ips, price = r["throughput_ips"], ru.price_per_hour
        out[key] = {"result_id": rid, "run_id": r["run_id"], "effective_at": eff, "gpu": ru.gpu_name or "cpu",
                    "price_per_hour": price, "throughput_ips": ips, "p99_ms": r["p99_ms"],
                    "stable": bool(r["stable"]), "cv_pct": r["cv_pct"],
                    "cost_per_million": None if price is None or ips <= 0 else price / (ips * 3600.0) * 1e6,
                    "scenario_valid": r["scenario_valid"], "scenario_metric": r["scenario_metric"]}
    for key, v in out.items():
        node, model, backend, precision, bs, conc, scenario = key
        eager = "eager images" if backend.endswith(" images") else "eager"
        base = None
        if not scenario:
            base = (out.get((node, model, eager, precision, bs, conc, "")) or {}).get("throughput_ips") or \
                (out.get((node, model, eager, "fp32", bs, conc, "")) or {}).get("throughput_ips")
        v["speedup_vs_eager"] = v["throughput_ips"] / base if base else None
    return out


def latest(conn) -> dict[tuple, dict]:  # noqa: ANN001
    from sqlalchemy import select

    from agent.collector.tables import LATEST_KEY, latest_results

    out = {}
    for r in conn.execute(select(latest_results)).mappings():
        v = {k: r[k] for k in r if k not in LATEST_KEY}
        v["stable"] = bool(v["stable"])
        v["scenario_valid"] = None if v["scenario_valid"] is None else bool(v["scenario_valid"])
        out[tuple(r[k] for k in LATEST_KEY)] = v
    return out


def assert_matches_references(engine) -> dict[tuple, dict]:  # noqa: ANN001
    from sqlalchemy import text

    from agent.fleet.data import LATEST_SQL
    from agent.fleet.scenarios import SCENARIOS_SQL

    with engine.connect() as conn:
        got, want = latest(conn), reference(conn)
        sweep = conn.execute(text(LATEST_SQL.format(where=""))).all()
        scen = conn.execute(text(SCENARIOS_SQL.format(where="AND res.tuning IS NULL"))).all()
        _run, rows = stored(conn)
    assert set(got) == set(want)
    for key, w in want.items():
        g = got[key]
        assert {k: g[k] for k in w if k not in FLOATS} == {k: w[k] for k in w if k not in FLOATS}, key
        for k in FLOATS:
            assert g[k] == w[k] if w[k] is None else g[k] == pytest.approx(w[k], rel=1e-12), (key, k, g[k], w[k])
    # the report's reference queries know no " images" backend: compare the configurations without any
    with_images = {(r["node_name"], r["model"], r["format"], r["precision"], r["batch_size"]) for r in rows
                   if r["input"] == "image"}

    def plain(key: tuple) -> bool:
        return not key[2].endswith(" images") and (key[0], key[1], key[2].removeprefix("triton-"), key[3],
                                                   key[4]) not in with_images

    assert {(t[0], t[4], t[5], t[6], t[7], t[8], ""): (t[13], t[9]) for t in sweep
            if plain((t[0], t[4], t[5], t[6], t[7]))} == \
        {k: (v["run_id"], v["throughput_ips"]) for k, v in got.items() if not k[6] and plain(k)}
    assert {(t[0], t[2], t[3], t[4], t[5], 0, t[6]): (t[9], t[8], bool(t[7])) for t in scen
            if plain((t[0], t[2], t[3], t[4], t[5]))} == \
        {k: (v["run_id"], v["scenario_metric"], v["scenario_valid"]) for k, v in got.items() if k[6] and plain(k)}
    return got


def rows_of(engine):  # noqa: ANN001, ANN201
    with engine.connect() as conn:
        return latest(conn)


# --- tests ----------------------------------------------------------------------------------

def test_ingest_one_at_a_time_keeps_the_newest_of_every_configuration(db_url):
    from agent.collector.db import make_engine, migrate
    from agent.collector.ingest import ingest
    from agent.collector.latest import fold_pending

    engine = make_engine(db_url)
    migrate(engine)
    docs = documents()
    for i, d in enumerate(docs):
        if i == 9:  # created after the 2099 document arrived
            d.created_at = datetime.now(UTC)
        assert ingest(engine, d)
        if i == 0:  # ingest queues the run; folded, it is there — without an eager, no speedup
            assert rows_of(engine) == {} and fold_pending(engine) == 1
            rows = rows_of(engine)
            assert rows and all(v["speedup_vs_eager"] is None for v in rows.values())
        elif i % 4 == 0:  # folded in batches of every size, as the collector's idle moments fall
            assert fold_pending(engine, batch=3) == 4
    assert fold_pending(engine) == (len(docs) - 1) % 4 and fold_pending(engine) == 0
    got = assert_matches_references(engine)

    n1 = "node-0011"
    onnx8 = got[(n1, "resnet18", "onnx", "fp32", 8, 1, "")]
    assert onnx8["speedup_vs_eager"] == pytest.approx(
        onnx8["throughput_ips"] / got[(n1, "resnet18", "eager", "fp32", 8, 1, "")]["throughput_ips"])
    # fp16 batch 8 has no fp16 eager: fp32's; image rows only against eager on images
    trt16 = got[(n1, "resnet18", "tensorrt", "fp16", 8, 1, "")]
    assert trt16["speedup_vs_eager"] == pytest.approx(
        trt16["throughput_ips"] / got[(n1, "resnet18", "eager", "fp32", 8, 1, "")]["throughput_ips"])
    assert got[(n1, "resnet18", "tensorrt images", "fp32", 8, 1, "")]["speedup_vs_eager"] is None
    assert got[(n1, "resnet18", "onnx images", "fp32", 1, 1, "")]["speedup_vs_eager"] is not None
    assert got[(n1, "resnet18", "triton-onnx", "fp32", 8, 4, "")]["speedup_vs_eager"] is None  # no eager at c=4
    # same configuration twice in one document: the second (3x faster) is newest
    assert got[(n1, "resnet18", "onnx", "fp32", 1, 1, "")]["run_id"] == docs[5].id
    assert got[(n1, "resnet18", "onnx", "fp32", 1, 1, "")]["throughput_ips"] == docs[5].results[1].throughput_ips
    # out of order: node 2's newer document stays; tensorrt only in the older one
    assert got[("node-0012", "mobilenet_v2", "onnx", "fp32", 1, 1, "")]["run_id"] == docs[6].id
    assert got[("node-0012", "mobilenet_v2", "tensorrt", "fp32", 1, 1, "")]["run_id"] == docs[7].id
    # the 2099 document was effective at its arrival: the later real one replaced it
    assert got[("node-0013", "resnet50", "onnx", "fp32", 1, 1, "")]["run_id"] == docs[9].id
    # scenarios: in-process and served apart, verdicts kept, no speedup; no tuning point
    assert got[("node-0014", "resnet18", "onnx", "fp32", 1, 0, "server")]["scenario_valid"] is False
    assert got[("node-0014", "resnet18", "triton-onnx", "fp32", 1, 0, "server")]["scenario_valid"] is True
    assert all(v["speedup_vs_eager"] is None for k, v in got.items() if k[6])
    assert not any(k[1] == "resnet34" or (k[0] == "node-0014" and k[4] == 8) for k in got)
    assert got[("node-0015", "resnet18", "onnx", "fp32", 1, 1, "")]["cost_per_million"] is None
    assert got[("node-0015", "resnet18", "onnx", "fp32", 1, 1, "")]["gpu"] == "cpu"
    n16 = "node-0016"
    assert got[(n16, "mobilenet_v2", "eager", "fp32", 1, 1, "")]["run_id"] == docs[14].id
    assert got[(n16, "mobilenet_v2", "onnx", "fp32", 1, 1, "")]["speedup_vs_eager"] == pytest.approx(
        docs[15].results[1].throughput_ips / docs[14].results[0].throughput_ips)
    assert got[(n16, "mobilenet_v2", "onnx", "fp16", 1, 1, "")]["speedup_vs_eager"] == pytest.approx(
        docs[16].results[1].throughput_ips / docs[14].results[0].throughput_ips)

    # a duplicate delivery changes nothing, and queues nothing
    assert not ingest(engine, docs[1]) and not ingest(engine, docs[-1])
    assert fold_pending(engine) == 0 and rows_of(engine) == got
    engine.dispose()


def test_the_collector_folds_while_idle_and_the_report_folds_the_rest(db_url, tmp_path):
    """A running collector queues each document's run and folds the queue in the background
    once no document arrived for a moment; the fleet report folds whatever is still queued
    before it reads: both give the references' rows."""
    import time

    from sqlalchemy import func, select

    from agent.collector.db import make_engine, migrate
    from agent.collector.ingest import ingest
    from agent.collector.tables import latest_pending
    from agent.fleet.data import build_report

    engine = make_engine(db_url)
    migrate(engine)
    docs = [d for d in documents()[:9] if d.created_at.year < 2090]  # the collector refuses the future
    c = Collector(db_url, tmp_path / "collector.log").start()
    try:
        for d in docs:
            assert c.post(d.model_dump_json()).status_code == 201
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if conn.execute(select(func.count()).select_from(latest_pending)).scalar() == 0:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("the collector did not fold its queue within 60 s of going idle")
    finally:
        c.stop()
    assert_matches_references(engine)
    for d in documents()[9:]:  # stored, not folded: the report folds them first
        assert ingest(engine, d)
    report = build_report(engine)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(latest_pending)).scalar() == 0
    assert_matches_references(engine)
    assert len(report.rows) == sum(1 for k in rows_of(engine) if not k[6])
    engine.dispose()


def test_ingest_many_in_batches_matches_the_references(db_url):
    from agent.collector.db import make_engine, migrate
    from agent.collector.ingest import ingest_many

    engine = make_engine(db_url)
    migrate(engine)
    docs = documents()
    # batches: eager (docs[1]) a batch after the rows it is the base of; node 2's two
    # documents and node 3's two in one batch each (deduplicated within one statement)
    batches = [docs[0:1], docs[2:5] + docs[1:2], docs[5:8], docs[8:12], docs[12:]]
    now = datetime.now(UTC)
    docs[9].created_at = now  # received a second after the 2099 document, which it replaces
    for b in batches:
        assert ingest_many(engine, b, received_at=[now + timedelta(seconds=i) for i in range(len(b))]) == len(b)
    got = assert_matches_references(engine)
    assert got[("node-0011", "resnet18", "onnx", "fp32", 8, 1, "")]["speedup_vs_eager"] is not None
    assert got[("node-0012", "mobilenet_v2", "onnx", "fp32", 1, 1, "")]["run_id"] == docs[6].id
    assert got[("node-0013", "resnet50", "onnx", "fp32", 1, 1, "")]["run_id"] == docs[9].id
    # a whole batch delivered again changes nothing
    assert ingest_many(engine, docs[:6]) == 0
    assert rows_of(engine) == got
    engine.dispose()


def test_migration_0004_backfills_latest_results_from_stored_results(db_url):
    """A database at 0003 that holds results: the upgrade fills latest_results (the same
    rows as ingest would have kept) and drops ix_results_config; downgrade reverses."""
    from alembic import command
    from sqlalchemy import inspect

    from agent.collector.db import alembic_config, current_revision, make_engine, migrate
    from agent.collector.ingest import _upsert_node, insert_results, result_rows, run_row, to_utc_naive
    from agent.collector.tables import runs

    engine = make_engine(db_url)
    command.upgrade(alembic_config(engine), "0003")
    received = to_utc_naive(datetime.now(UTC))
    with engine.begin() as conn:  # what ingest stored before 0004
        for d in documents():
            _upsert_node(conn, d, to_utc_naive(d.created_at))
            conn.execute(runs.insert(), run_row(d, received))
            insert_results(conn, result_rows(d))
    assert "ix_results_config" in {i["name"] for i in inspect(engine).get_indexes("results")}
    migrate(engine)
    assert current_revision(engine) == "0004"
    assert_matches_references(engine)
    names = {i["name"] for i in inspect(engine).get_indexes("latest_results")}
    summary_indexes = {"ix_latest_ips", "ix_latest_p99", "ix_latest_speedup", "ix_latest_cost", "ix_latest_scenario"}
    # SQLite's median seeks need them; PostgreSQL (window functions) keeps the primary key only
    assert summary_indexes <= names if db_url.startswith("sqlite") else not summary_indexes & names
    assert "ix_results_tuning" in {i["name"] for i in inspect(engine).get_indexes("results")}
    assert "ix_results_config" not in {i["name"] for i in inspect(engine).get_indexes("results")}
    command.downgrade(alembic_config(engine), "0003")
    assert "latest_results" not in inspect(engine).get_table_names()
    assert "ix_results_config" in {i["name"] for i in inspect(engine).get_indexes("results")}
    assert "ix_results_tuning" not in {i["name"] for i in inspect(engine).get_indexes("results")}
    engine.dispose()


def test_the_tuning_section_reads_tuning_points_by_their_partial_index(tmp_path):
    """agent.fleet.tuning's query (no --since) reads results through ix_results_tuning
    (the tuning points only) on SQLite, not by a scan of every result."""
    from sqlalchemy import text

    from agent.collector.db import make_engine, migrate
    from agent.fleet.tuning import TUNING_SQL

    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    migrate(engine)
    with engine.connect() as conn:
        plan = " / ".join(r[3] for r in conn.execute(text("EXPLAIN QUERY PLAN " + TUNING_SQL.format(where=""))))
    engine.dispose()
    assert "res USING INDEX ix_results_tuning" in plan, plan
