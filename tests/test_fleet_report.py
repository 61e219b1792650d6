"""The fleet report from a database with several nodes, GPUs and backends:
its numbers match the inputs (throughput, p99, speedup over eager, cost per
million inferences, best configuration, before/after stack comparison);
HTML is self-contained; the collector path gives the same numbers."""

from __future__ import annotations

import csv
import io
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collector_support import *  # noqa: E402,F403  (fixtures)
from collector_support import Collector, agent_env, run_agent  # noqa: E402

from agent.collector.db import make_engine, migrate  # noqa: E402
from agent.collector.ingest import ingest, ingest_many  # noqa: E402
from testing.synthetic_fleet import make_document, make_node  # noqa: E402

MODELS = ("resnet18", "squeezenet1_1", "mobilenet_v3_small")
T0 = datetime(2025, 5, 1, tzinfo=UTC)


def fleet_docs():
    """4 nodes (3 GPU types), 4 backends, 3 batch sizes, 2 concurrencies; node-0000 is
    upgraded (driver + TensorRT) and re-benchmarked: TensorRT got 20 % slower there."""
    docs = [make_document(make_node(i), MODELS, batch_sizes=(1, 8, 32), concurrencies=(1, 2),
                          created_at=T0 + timedelta(minutes=i), seed=i) for i in range(4)]
    before = docs[0]
    after_node = make_node(0, driver_version="550.54.15", tensorrt_version="10.0.1")
    after = before.model_copy(deep=True, update={"id": "after-upgrade", "node": after_node,
                                                 "created_at": T0 + timedelta(days=1)})
    for r in after.results:
        if r.format == "tensorrt":
            r.throughput_ips *= 0.8
            r.latency_ms.p99 *= 1.25
            r.latency_ms.max *= 1.25  # percentiles stay in order (the collector checks)
    return docs, before, after


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture
def report_db(db_url):
    engine = make_engine(db_url)
    migrate(engine)
    docs, before, after = fleet_docs()
    assert ingest_many(engine, docs) == 4
    assert ingest(engine, after) is True
    engine.dispose()
    return db_url, docs, before, after


def check_numbers(out: Path, docs, before, after):
    rows = read_csv(out / "results.csv")
    newest = {d.node.node_name: d for d in docs}
    newest["node-0000"] = after
    assert len(rows) == 4 * len(MODELS) * 4 * 3 * 2
    for row in rows:
        doc = newest[row["node"]]
        src = next(r for r in doc.results if r.model == row["model"] and r.format == row["backend"]
                   and r.batch_size == int(row["batch_size"]) and r.concurrency == int(row["concurrency"]))
        eager = next(r for r in doc.results if r.model == src.model and r.format == "eager"
                     and r.batch_size == src.batch_size and r.concurrency == src.concurrency)
        assert row["run_id"] == doc.id
        assert float(row["throughput_ips"]) == pytest.approx(src.throughput_ips, rel=1e-5)
        assert float(row["p99_ms"]) == pytest.approx(src.latency_ms.p99, rel=1e-5)
        assert float(row["speedup_vs_eager"]) == pytest.approx(src.throughput_ips / eager.throughput_ips, rel=1e-5)
        price = doc.node.price_per_hour
        assert float(row["cost_per_million"]) == pytest.approx(price / (src.throughput_ips * 3600) * 1e6, rel=1e-5)
        assert row["gpu"] == doc.node.gpu_name

    # best configuration per model under the p99 budget, recomputed from the inputs
    budget = 2.0
    best = {(b["model"], b["criterion"]): b for b in read_csv(out / "best.csv")}
    for model in MODELS:
        cands = [(d, r) for d in newest.values() for r in d.results
                 if r.model == model and r.latency_ms.p99 <= budget]
        d, r = max(cands, key=lambda x: x[1].throughput_ips)
        b = best[(model, "fastest")]
        assert (b["node"], b["backend"], int(b["batch_size"]), int(b["concurrency"])) == \
            (d.node.node_name, r.format, r.batch_size, r.concurrency)
        assert float(b["p99_ms"]) <= budget
        d, r = min(cands, key=lambda x: x[0].node.price_per_hour / x[1].throughput_ips)
        assert best[(model, "cheapest")]["node"] == d.node.node_name
        assert float(best[(model, "cheapest")]["cost_per_million"]) == pytest.approx(
            d.node.price_per_hour / (r.throughput_ips * 3600) * 1e6, rel=1e-5)

    # the before/after comparison for the upgraded node, machine-readable
    cmp_rows = read_csv(out / "comparison.csv")
    assert {c["node"] for c in cmp_rows} == {"node-0000"}
    assert len(cmp_rows) == len(MODELS) * 4 * 3 * 2
    for c in cmp_rows:
        assert (c["before_run"], c["after_run"]) == (before.id, after.id)
        assert "driver=535.183.01" in c["before_stack"] and "tensorrt=10.0.1" in c["after_stack"]
        if c["backend"] == "tensorrt":
            assert c["flag"] == "regression"
            assert float(c["ips_change_pct"]) == pytest.approx(-20.0, abs=1e-3)
            assert float(c["p99_change_pct"]) == pytest.approx(25.0, abs=1e-3)
        else:
            assert c["flag"] == "unchanged" and float(c["ips_change_pct"]) == pytest.approx(0, abs=1e-6)

    md = (out / "report.md").read_text()
    assert "## Before/after stack comparison" in md
    assert "**node-0000**: driver 535.183.01→550.54.15 tensorrt 8.6.1→10.0.1" in md
    assert f"{len(MODELS) * 3 * 2} regression(s)" in md
    assert "| node-0000 | resnet18 | tensorrt | fp32 | 1 | 1 |" in md
    return rows


@pytest.mark.slow
def test_report_numbers_match_inputs(report_db, tmp_path):
    url, docs, before, after = report_db
    out = tmp_path / "report"
    r = run_agent("fleet", "report", "--db", url, "--out", str(out), "--p99-budget", "2",
                  "--threshold", "5", env=agent_env())
    assert r.returncode == 0, r.stderr
    assert f"4 nodes, 3 models, {4 * 3 * 4 * 3 * 2} configurations, 18 regression(s) flagged" in r.stdout
    check_numbers(out, docs, before, after)
    html = (out / "report.html").read_text()
    assert html.count('<svg class="figure"') == len(MODELS)  # one inline SVG figure per model
    assert "<img" not in html
    assert "http://" not in html and "https://" not in html and "<script" not in html  # opens offline
    for text in ("Best configuration per model", "Before/after stack comparison", "node-0003",
                 'class="regression"', "Tesla T4"):
        assert text in html


@pytest.mark.slow
def test_report_from_a_running_collector_matches(tmp_path):
    db = f"sqlite:///{tmp_path / 'c.db'}"
    c = Collector(db, tmp_path / "c.log").start()
    try:
        docs, before, after = fleet_docs()
        for d in [*docs, after]:
            assert c.post(d.model_dump_json()).status_code == 201
        out = tmp_path / "report"
        r = run_agent("fleet", "report", "--collector", c.url, "--out", str(out), "--format", "md,csv",
                      "--p99-budget", "2", env=agent_env())
        assert r.returncode == 0, r.stderr
        check_numbers(out, docs, before, after)
        assert not (out / "report.html").exists()
    finally:
        c.stop()


def test_compare_two_runs_and_since(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    engine = make_engine(url)
    migrate(engine)
    docs, before, after = fleet_docs()
    ingest_many(engine, [*docs, after])
    engine.dispose()
    out = tmp_path / "r"
    r = run_agent("fleet", "report", "--db", url, "--out", str(out), "--format", "csv",
                  "--compare", f"{docs[1].id},{docs[2].id}", "--threshold", "1000", env=agent_env())
    assert r.returncode == 0, r.stderr
    cmp_rows = read_csv(out / "comparison.csv")
    assert {(c["before_run"], c["after_run"]) for c in cmp_rows} == {(docs[1].id, docs[2].id)}
    assert {c["flag"] for c in cmp_rows} == {"unchanged"}
    # --since after the other nodes' runs: only the upgraded run is reported, nothing to compare
    r = run_agent("fleet", "report", "--db", url, "--out", str(out), "--format", "csv",
                  "--since", (T0 + timedelta(hours=12)).isoformat(), env=agent_env())
    assert r.returncode == 0, r.stderr
    assert {x["run_id"] for x in read_csv(out / "results.csv")} == {after.id}
    assert read_csv(out / "comparison.csv") == []
    r = run_agent("fleet", "report", "--db", url, "--out", str(out), "--outputs", "csv,md", "--no-results-csv",
                  env=agent_env())
    assert r.returncode == 0, r.stderr
    assert not (out / "results.csv").exists() and (out / "by_gpu.csv").exists()
    assert "`agent fleet report --results-csv` writes it" in (out / "report.md").read_text()


def test_results_csv_is_written_up_to_the_row_limit_else_on_request(tmp_path, monkeypatch):
    """results.csv (every newest result) is written by default up to RESULTS_CSV_MAX_ROWS
    rows; above, only on request (--results-csv), and both pages say how to get it.
    The other files are written either way; when written, results.csv is the safe writer's."""
    from agent.fleet import render

    report = _report([_row(node=f"node-{i}", throughput_ips=100.0 + i) for i in range(3)])
    monkeypatch.setattr(render, "RESULTS_CSV_MAX_ROWS", 2)
    render.write_report(report, tmp_path / "a", ["html", "md", "csv"])
    assert not (tmp_path / "a" / "results.csv").exists()
    assert {p.name for p in (tmp_path / "a").iterdir()} >= {"by_gpu.csv", "best.csv", "scenarios.csv",
                                                            "comparison.csv", "report.md", "report.html"}
    for page in ("report.md", "report.html"):
        text = (tmp_path / "a" / page).read_text()
        assert "results.csv (every newest result, 3 rows) was not written" in text and "--results-csv" in text
    render.write_report(report, tmp_path / "b", ["html", "md", "csv"], results_csv=True)
    assert (tmp_path / "b" / "results.csv").read_text() == render.csv_files(report)["results.csv"]
    assert len(read_csv(tmp_path / "b" / "results.csv")) == 3
    assert "--results-csv" not in (tmp_path / "b" / "report.md").read_text()
    monkeypatch.setattr(render, "RESULTS_CSV_MAX_ROWS", 3)
    render.write_report(report, tmp_path / "c", ["csv"])
    assert (tmp_path / "c" / "results.csv").exists()
    render.write_report(report, tmp_path / "d", ["csv"], results_csv=False)
    assert not (tmp_path / "d" / "results.csv").exists()


def test_bad_input_is_a_one_line_error_and_writes_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    engine = make_engine(url)
    migrate(engine)
    ingest_many(engine, fleet_docs()[0])
    engine.dispose()
    out = tmp_path / "r"
    cases = [
        (["--db", url, "--outputs", "pdf"], "--outputs 'pdf': choose from html, md, csv"),
        (["--db", url, "--since", "yesterday"], "--since 'yesterday'"),
        (["--db", url, "--compare", "a"], "--compare needs two run ids"),
        (["--db", url, "--compare", "a,b"], "--compare: no run with id 'a'"),
        (["--db", f"sqlite:///{tmp_path / 'none.db'}"], "no collector database at"),
        (["--db", url, "--collector", "http://127.0.0.1:1"], "either --db or --collector"),
        (["--db", url, "--since", "2099-01-01"], "no results to report since 2099-01-01"),
        (["--collector", "http://127.0.0.1:1"], "collector http://127.0.0.1:1 unreachable"),
    ]
    for args, message in cases:
        r = run_agent("fleet", "report", "--out", str(out), *args, env=agent_env())
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert not out.exists()
    empty = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with empty.connect():
        pass
    r = run_agent("fleet", "report", "--db", f"sqlite:///{tmp_path / 'empty.db'}", "--out", str(out),
                  env=agent_env())
    assert "is not a collector database" in r.stderr
    from alembic import command  # a database of an older collector: told how to upgrade it

    from agent.collector.db import alembic_config

    old = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    command.upgrade(alembic_config(old), "0003")
    old.dispose()
    r = run_agent("fleet", "report", "--db", f"sqlite:///{tmp_path / 'old.db'}", "--out", str(out), env=agent_env())
    assert r.returncode == 2 and "has schema revision 0003, this agent reads 0004" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


def test_cost_per_million_formula():
    from agent.fleet.data import cost_per_million

    assert cost_per_million(3.6, 1000.0) == pytest.approx(1.0)  # $3.60/h at 1000/s: $1 per million
    assert cost_per_million(None, 10.0) is None
    assert cost_per_million(1.0, 0.0) is None


def test_served_results_are_their_own_backend(tmp_path):
    """The same engine measured in-process and through Triton gives two rows
    (``onnx`` and ``triton-onnx``): the newer never hides the other."""
    from agent.fleet.data import build_report

    engine = make_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    migrate(engine)
    node = make_node(0)
    local = make_document(node, ("resnet18",), ("eager", "onnx"), (1,), created_at=T0, seed=1)
    served = make_document(node, ("resnet18",), ("onnx",), (1,), created_at=T0 + timedelta(minutes=1),
                           seed=2, target="triton")
    assert ingest_many(engine, [local, served]) == 2
    rows = {r.backend: r for r in build_report(engine).rows}
    assert set(rows) == {"eager", "onnx", "triton-onnx"}
    assert rows["onnx"].run_id == local.id and rows["triton-onnx"].run_id == served.id
    assert rows["triton-onnx"].throughput_ips == pytest.approx(served.results[0].throughput_ips)
    assert rows["triton-onnx"].speedup_vs_eager == pytest.approx(
        served.results[0].throughput_ips / local.results[0].throughput_ips)


# ---------------------------------------------------------------- issue #11: reports
def _row(**kw):
    from agent.fleet.data import Row

    base = dict(node="node-0000", gpu="NVIDIA A10G", instance_type="g5.xlarge", price_per_hour=1.0,
                model="resnet18", backend="onnx", precision="fp32", batch_size=1, concurrency=1,
                throughput_ips=100.0, p50_ms=1.0, p99_ms=1.5, stable=True, run_id="run-a",
                created_at=datetime(2025, 5, 1), stack="driver=535 cuda=12.2")
    return Row(**{**base, **kw})


def _report(rows, comparisons=(), budget=None):
    from agent.fleet.data import Report, _best, _by_gpu, _compared_node, _derive

    rows, comparisons = list(rows), list(comparisons)
    _derive(rows)
    compared = [_compared_node(c.node, c.before_stack, c.after_stack, [c]) for c in comparisons]
    return Report(generated_at=datetime.now(UTC), since=None, threshold_pct=5.0, p99_budget_ms=budget,
                  nodes=[], rows=rows, by_gpu=_by_gpu(rows), best=_best(rows, budget),
                  comparisons=comparisons, compared_nodes=compared)


def test_csv_cells_a_spreadsheet_would_execute_are_escaped():
    """CSV injection (OWASP): text from documents starting with = + - @ tab CR is
    written as ' + text and quoted, in every CSV file; numbers stay numbers."""
    from agent.csvsafe import number, safe_cell
    from agent.fleet.data import Comparison
    from agent.fleet.render import csv_files

    evil = {"gpu": '=HYPERLINK("http://evil.example/x","click")', "instance_type": "@SUM(1+1)",
            "stack": "-2+3+cmd|' /C calc'!A0", "run_id": "+1", "node": "\tnode", "backend": "\r=1"}
    rows = [_row(**evil)]
    cmp = Comparison("=node", "resnet18", "onnx", "fp32", 1, 1, "a", "b", "=before=1", "@after=2",
                     100.0, 94.8, -5.2, 1.0, 1.1, 10.0, "regression")
    files = csv_files(_report(rows, [cmp]))
    for name, text in files.items():
        for cells in csv.reader(io.StringIO(text, newline="")):
            for c in cells:
                assert not c.startswith(("=", "+", "@", "\t", "\r")), (name, c)
                # a minus only where the cell is a number (a formatted float)
                assert not c.startswith("-") or float(c) < 0, (name, c)
    from agent.fleet.data import ROW_FIELDS, as_tuples
    from agent.fleet.render import _csv

    # results.csv's row formatter writes exactly what the safe writer writes
    ref = io.StringIO()
    _csv(ref, as_tuples(rows) * 2 + [(*as_tuples([_row(price_per_hour=None)])[0][:18], 2.5, 120.0, 800.5, 150.25, 73.0, 0.125)],
         list(ROW_FIELDS), None)
    from agent.fleet.render import _results_csv

    fast = io.StringIO()
    _results_csv(fast, as_tuples(rows) * 2 + [(*as_tuples([_row(price_per_hour=None)])[0][:18], 2.5, 120.0, 800.5, 150.25, 73.0, 0.125)])
    assert fast.getvalue() == ref.getvalue()
    res = next(csv.DictReader(io.StringIO(files["results.csv"], newline="")))
    for col, value in evil.items():
        assert res[col] == "'" + value
    assert '"\'=HYPERLINK(""http://evil.example/x"",""click"")"' in files["results.csv"]  # quoted
    assert "\"'@SUM(1+1)\"" in files["results.csv"]
    gpu = next(csv.DictReader(io.StringIO(files["by_gpu.csv"], newline="")))
    assert gpu["gpu"] == "'" + evil["gpu"] and gpu["backend"] == "'" + evil["backend"]
    best = list(csv.DictReader(io.StringIO(files["best.csv"], newline="")))
    assert {(b["criterion"], b["gpu"], b["node"]) for b in best} == {
        ("fastest", "'" + evil["gpu"], "'\tnode"), ("cheapest", "'" + evil["gpu"], "'\tnode")}
    c = next(csv.DictReader(io.StringIO(files["comparison.csv"], newline="")))
    assert (c["node"], c["before_stack"], c["after_stack"]) == ("'=node", "'=before=1", "'@after=2")
    assert c["ips_change_pct"] == "-5.2" and ",-5.2," in files["comparison.csv"]  # a number, unescaped
    # the shared rule itself
    assert safe_cell("-1") == "'-1" and safe_cell(-1.5) == "-1.5" and safe_cell(-3) == -3
    assert safe_cell(number(-2.5, ".2f")) == "-2.50" and safe_cell(None) == "" and safe_cell("ok") == "ok"


def test_perf_analyzer_csv_goes_through_the_safe_writer(monkeypatch):
    """agent bench --csv uses the same writer (its cells are all numbers, written as before)."""
    import agent.bench.csvout as csvout
    import agent.csvsafe

    calls = []
    real = agent.csvsafe.writer
    monkeypatch.setattr(csvout, "writer", lambda f: calls.append(f) or real(f))
    doc = make_document(make_node(0), ("resnet18",), ("onnx",), (1,), created_at=T0)
    lines = csvout.perf_analyzer_csv(doc).splitlines()
    assert calls and len(lines) == 2 and lines[1].split(",")[1] == f"{doc.results[0].throughput_ips:.2f}"


def test_unstable_results_are_flagged_everywhere_and_never_best():
    """A result marked unstable is marked ⚠ in HTML and Markdown (with a legend),
    has stable=False in results.csv, is counted in the per-GPU summary, and is never
    the fastest, the cheapest or the best under the p99 budget."""
    from agent.fleet.data import Comparison
    from agent.fleet.render import context, csv_files
    from agent.templating import render

    a = _row(node="node-a", throughput_ips=1000.0, p99_ms=2.0)
    b = _row(node="node-b", throughput_ips=5000.0, p99_ms=1.0, stable=False, price_per_hour=0.1)
    c = _row(node="node-c", model="alexnet", throughput_ips=10.0, stable=False)  # only unstable results
    cmp = Comparison("node-b", "resnet18", "onnx", "fp32", 1, 1, "r1", "r2", "driver=1", "driver=2",
                     4000.0, 5000.0, 25.0, 1.0, 1.0, 0.0, "improvement", stable=False)
    report = _report([a, b, c], [cmp], budget=3.0)
    best = {(x["model"], x["criterion"]): x for x in report.best}
    assert best[("resnet18", "fastest")]["node"] == "node-a"
    assert best[("resnet18", "cheapest")]["node"] == "node-a"
    assert best[("alexnet", "fastest")]["node"] is None
    assert best[("alexnet", "fastest")]["note"] == "no stable configuration within the p99 budget"
    gpu = next(g for g in report.by_gpu if g["model"] == "resnet18")
    assert (gpu["nodes"], gpu["unstable"], gpu["best_ips"]) == (2, 1, 1000.0)
    assert gpu["median_ips"] == pytest.approx(3000.0)  # medians include them (documented)
    assert next(g for g in report.by_gpu if g["model"] == "alexnet")["best_ips"] is None

    files = csv_files(report)
    rows = {x["node"]: x for x in csv.DictReader(io.StringIO(files["results.csv"]))}
    assert (rows["node-a"]["stable"], rows["node-b"]["stable"]) == ("True", "False")
    assert {g["model"]: g["unstable"] for g in csv.DictReader(io.StringIO(files["by_gpu.csv"]))} == \
        {"alexnet": "1", "resnet18": "1"}
    assert next(csv.DictReader(io.StringIO(files["comparison.csv"])))["stable"] == "False"

    ctx = context(report, with_plots=False)
    md = render("report/report.md.j2", **ctx)
    assert "⚠ unstable: the measurement did not settle" in md and "2 of 3 configuration(s)" in md
    assert "| node-b | NVIDIA A10G | onnx | fp32 | 1 | 1 | 5,000 ⚠ unstable |" in md
    assert "| node-a | NVIDIA A10G | onnx | fp32 | 1 | 1 | 1,000 |" in md
    assert "| NVIDIA A10G | onnx | fp32 | 1 | 1 | 2 | ⚠ 1 |" in md
    assert "| improvement ⚠ unstable |" in md and "1 improvement(s) beyond ±5.0 %, ⚠ 1 with an unstable measurement\n  - before:" in md
    html = render("report/report.html.j2", **ctx)
    assert '<span class="unstable">⚠ unstable</span>: the measurement did not settle' in html
    assert html.count('<tr class="unstable"><td>node-') == 2  # node-b and node-c
    assert '<td>improvement <span class="unstable">⚠ unstable</span></td>' in html
    assert '<span class="unstable">⚠ 1</span>' in html


def test_a_far_future_timestamp_cannot_hide_newer_results(db_url):
    """A run that arrived at T0+1min claiming 2099 (written straight into the tables:
    the collector refuses it at ingest today) neither stays "newest" for its
    configurations, nor passes --since for ever, nor becomes the "after" of the stack
    comparison: the report orders by min(created_at, received_at)."""
    from sqlalchemy import update

    from agent.collector.tables import results, runs
    from agent.fleet.data import build_report

    engine = make_engine(db_url)
    migrate(engine)
    models, formats = ("resnet18",), ("eager", "onnx")
    old = make_document(make_node(0), models, formats, (1,), created_at=T0, seed=1)
    forged = make_document(make_node(0), models, formats, (1,), created_at=T0 + timedelta(minutes=1), seed=2)
    new = make_document(make_node(0, driver_version="550.54.15"), models, formats, (1,),
                        created_at=T0 + timedelta(days=1), seed=3)
    assert ingest_many(engine, [old, forged, new]) == 3
    future, arrived = datetime(2099, 1, 1), datetime(2025, 5, 1, 0, 1)  # naive UTC, as stored
    with engine.begin() as conn:
        conn.execute(update(runs).where(runs.c.id == forged.id).values(created_at=future, received_at=arrived))
        conn.execute(update(results).where(results.c.run_id == forged.id).values(created_at=future))
    try:
        report = build_report(engine)
        assert {r.run_id for r in report.rows} == {new.id}
        assert [r.throughput_ips for r in report.rows] == pytest.approx(
            [r.throughput_ips for r in new.results])
        [node] = report.compared_nodes
        assert "driver=550.54.15" in node["after_stack"] and "driver=535.183.01" in node["before_stack"]
        assert {(c.before_run, c.after_run) for c in report.comparisons} == {(forged.id, new.id)}
        since = build_report(engine, since=T0 + timedelta(hours=12))
        assert {r.run_id for r in since.rows} == {new.id} and since.compared_nodes == []
    finally:
        engine.dispose()


# ---------------------------------------------------------------- issue #17: the report's speed
def _mixed_fleet(engine):
    """Re-measured configurations, a Triton run, an unstable result, a node without a
    price, a --since-worthy spread of times: what the one-pass selection must get right."""
    models, formats = ("resnet18", "alexnet"), ("eager", "onnx", "tensorrt")
    docs = [make_document(make_node(i), models, formats, (1, 8), (1, 2), created_at=T0 + timedelta(minutes=i),
                          seed=i, stability=i % 2 == 0, scenarios=("offline", "single-stream") if i < 3 else (),
                          invalid=[("resnet18", "eager", "single-stream")] if i == 1 else ())
            for i in range(8)]  # cv_pct on some nodes only; LoadGen scenarios on three
    docs.append(make_document(make_node(1), ("resnet18",), ("onnx",), (1,), created_at=T0 + timedelta(hours=1),
                              seed=50, scenarios=("offline",)))  # newer measurement of some of node-0001's configurations
    docs.append(make_document(make_node(2), ("resnet18",), ("onnx",), (1, 8), created_at=T0 + timedelta(hours=2),
                              seed=51, target="triton", scenarios=("server", "offline"),
                              invalid=[("resnet18", "onnx", "server")]))
    docs.append(make_document(make_node(3, driver_version="550.54.15"), models, formats, (1, 8), (1, 2),
                              created_at=T0 + timedelta(days=1), seed=52))  # an upgraded node
    docs.append(make_document(make_node(9, price_per_hour=None), ("alexnet",), ("eager", "onnx"), (1,),
                              created_at=T0 + timedelta(hours=3), seed=53))
    docs[4].results[0].stable = False
    docs[5].results[3].stable = False
    docs[6].results[5].cv_pct = 7.5  # stable by the bench's test, but its windows varied more than --max-cv
    assert ingest_many(engine, docs) == len(docs)
    return docs


def test_one_pass_report_equals_the_sql_window_and_the_row_summaries(db_url):
    """build_report's one pass over raw tuples gives exactly the rows of the reference
    window-function query (LATEST_SQL), and its per-GPU summary, best configurations,
    figure series and stack comparison equal those computed from Row objects."""
    from sqlalchemy import text

    from agent.fleet.data import (
        LATEST_SQL,
        Row,
        Rows,
        _best,
        _by_gpu,
        _compare,
        _derive,
        build_report,
        is_stable,
    )
    from agent.fleet.plots import model_series
    from agent.fleet.scenarios import SCENARIOS_SQL, tables_from_rows

    engine = make_engine(db_url)
    migrate(engine)
    _mixed_fleet(engine)
    try:
        for since in (None, T0 + timedelta(minutes=30)):
            report = build_report(engine, since=since, p99_budget_ms=5.0)
            assert isinstance(report.rows, Rows)
            params, where = {}, ""
            if since is not None:
                where, params = "WHERE r.created_at >= :since AND r.effective_at >= :since", {
                    "since": since.replace(tzinfo=None)}
            with engine.connect() as conn:
                ref = [Row(*t[:16], cv_pct=t[16]) for t in conn.execute(text(LATEST_SQL.format(where=where)), params)]
            for r in ref:
                r.stable = is_stable(r.stable, r.cv_pct)
                if isinstance(r.created_at, str):
                    r.created_at = datetime.fromisoformat(r.created_at)
            _derive(ref)
            with engine.connect() as conn:  # scenarios: the same pass = the reference window query
                sc_ref = tables_from_rows(conn, list(conn.execute(text(SCENARIOS_SQL.format(
                    where="" if since is None else "AND res.created_at >= :since AND ru0.received_at >= :since")),
                    params)))
            assert report.scenarios == sc_ref and report.scenarios.rows
            key = lambda r: (r.model, r.gpu, r.node, r.backend, r.precision, r.batch_size, r.concurrency)  # noqa: E731
            rows = list(report.rows)
            assert sorted(rows, key=key) == sorted(ref, key=key) and rows == sorted(rows, key=key)
            assert len(rows) == len(report.rows) and report.rows[0] == rows[0] and report.rows[-2:] == rows[-2:]
            assert report.by_gpu == _by_gpu(ref)
            assert report.best == _best(ref, 5.0)
            assert report.series == {m: model_series(m, [r for r in ref if r.model == m]) for m in report.models}
            assert report.unstable == sum(not r.stable for r in ref)
            if since is None:
                assert {r.backend for r in rows} >= {"triton-onnx", "onnx"}
                assert report.unstable == 3  # two marked unstable, one by its cv
                assert any(r.cost_per_million is None for r in rows)  # node-0009 has no price
            if since is not None:  # node-0003's old stack ran before --since: nothing to compare
                assert report.compared_nodes == [] and report.comparisons == []
                continue
            # the stack comparison (node-0003) from the same pass = the newest rows of each stack's runs
            [node] = report.compared_nodes
            assert node["node"] == "node-0003" and node["changed"] == "driver 535.183.01→550.54.15"
            with engine.connect() as conn:
                ids = dict(conn.execute(text("SELECT id, stack FROM runs WHERE node_name = 'node-0003'")).all())
            by_stack = {s: [r for r in _latest_for(engine, [i for i, x in ids.items() if x == s])] for s in
                        (node["before_stack"], node["after_stack"])}
            assert report.comparisons == _compare(by_stack[node["before_stack"]], by_stack[node["after_stack"]], 5.0)
            assert len(report.comparisons) == 2 * 3 * 2 * 2
    finally:
        engine.dispose()


def _reference(engine, max_cv_pct=5.0):
    """Every newest sweep result by the reference window query (LATEST_SQL), as Rows with
    speedup and cost derived in Python, and the scenario tables from every scenario row."""
    from sqlalchemy import text

    from agent.fleet.data import LATEST_SQL, Row, _derive, is_stable
    from agent.fleet.scenarios import SCENARIOS_SQL, tables_from_rows

    with engine.connect() as conn:
        ref = [Row(*t[:16], cv_pct=t[16]) for t in conn.execute(text(LATEST_SQL.format(where="")))]
        scenarios = tables_from_rows(conn, list(conn.execute(text(SCENARIOS_SQL.format(where="")))))
    for r in ref:
        r.stable = is_stable(r.stable, r.cv_pct, max_cv_pct)
        if isinstance(r.created_at, str):
            r.created_at = datetime.fromisoformat(r.created_at)
    _derive(ref)
    return ref, scenarios


def test_a_large_fleet_is_summarised_in_sql_without_reading_its_rows(db_url):
    """Above MAX_NODES_DETAIL nodes and with more than MAX_NODE_GROUPS nodes per GPU, the
    report summarises latest_results in SQL (medians by index seek on SQLite, by window on
    PostgreSQL) and reads no row unless asked: its per-GPU medians, best configurations
    (ties in throughput and cost included), figures (fp16 beside fp32 in one point), MLPerf
    summaries and ranking equal the Python reference over every row; asked, its rows equal
    the reference rows."""
    from agent.fleet.data import MAX_NODES_DETAIL, Rows, _best, _by_gpu, build_report
    from agent.fleet.plots import MAX_NODE_GROUPS, model_series
    from agent.fleet.render import csv_files, writes_results_csv

    engine = make_engine(db_url)
    migrate(engine)
    n = MAX_NODES_DETAIL + 17  # 42 nodes: 7 per GPU model
    docs = []
    for i in range(n):
        d = make_document(make_node(i), ("resnet18", "alexnet"), ("eager", "onnx", "tensorrt"), (1, 8),
                          created_at=T0 + timedelta(minutes=i), seed=i, stability=True,
                          scenarios=("offline", "server") if i % 3 else (),
                          invalid=[("resnet18", "onnx", "server")] if i % 5 == 1 else ())
        if i % 2:  # fp16 engines on half the nodes: a figure point spans two precisions
            d.results += [r.model_copy(update={"precision": "fp16", "throughput_ips": r.throughput_ips * 1.6})
                          for r in d.results if r.format == "tensorrt" and r.scenario is None]
        docs.append(d)
    docs[7].results[0].throughput_ips = docs[13].results[0].throughput_ips  # a tie: the report's order decides
    docs[20].results[2].stable = False
    assert ingest_many(engine, docs[:20]) == 20
    for d in docs[20:]:
        assert ingest(engine, d) is True
    try:
        ref, sc_ref = _reference(engine)
        assert max(sum(r.gpu == g for r in ref if r.model == "resnet18" and r.backend == "onnx"
                       and r.batch_size == 1) for g in {r.gpu for r in ref}) > MAX_NODE_GROUPS
        for budget in (None, 6.0):
            report = build_report(engine, p99_budget_ms=budget, rows=False)
            assert isinstance(report.rows, Rows) and not report.rows.read and len(report.rows) == len(ref)
            assert report.by_gpu == _by_gpu(ref)
            assert report.best == _best(ref, budget)
            assert report.series == {m: model_series(m, [r for r in ref if r.model == m]) for m in report.models}
            assert any("fp16" in r.precision for r in ref) and all(
                "by GPU" in s["title"] for s in report.series.values())
            assert report.unstable == sum(not r.stable for r in ref) >= 1
            sc = report.scenarios
            assert sc.rows is None and (sc.summary, sc.best, sc.invalid) == (sc_ref.summary, sc_ref.best, sc_ref.invalid)
            assert sc.invalid and not writes_results_csv(report)
            assert not {"results.csv", "scenarios.csv"} & set(csv_files(report))
        full = build_report(engine, p99_budget_ms=6.0, rows=True)
        key = lambda r: (r.model, r.gpu, r.node, r.backend, r.precision, r.batch_size, r.concurrency)  # noqa: E731
        assert list(full.rows) == sorted(ref, key=key) and full.scenarios == sc_ref
        assert writes_results_csv(full) and csv_files(full)["results.csv"].count("\n") == len(ref) + 1
    finally:
        engine.dispose()


def _latest_for(engine, run_ids):
    from agent.fleet.data import _latest_rows

    with engine.connect() as conn:
        return _latest_rows(conn, None, run_ids)


def test_ingest_many_keeps_given_received_at(tmp_path):
    from sqlalchemy import select

    from agent.collector.tables import runs

    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    migrate(engine)
    a, b = (make_document(make_node(i), ("resnet18",), ("eager",), (1,), created_at=T0, seed=i) for i in range(2))
    given = datetime(2025, 5, 1, 0, 5, tzinfo=UTC)
    before = datetime.now(UTC).replace(tzinfo=None)
    assert ingest_many(engine, [a, b], [given, None]) == 2
    with engine.connect() as conn:
        got = dict(conn.execute(select(runs.c.id, runs.c.received_at)).all())
    assert got[a.id] == datetime(2025, 5, 1, 0, 5)  # naive UTC, as stored
    assert got[b.id] >= before  # None: now
    with pytest.raises(ValueError):
        ingest_many(engine, [a], [])
    engine.dispose()


def test_report_from_a_collector_keeps_its_received_at(monkeypatch):
    """--collector mirrors /v1/runs into SQLite with each run's received_at from the
    collector (not the copy's time), so a document whose created_at is later than its
    arrival cannot hide the node's later runs there either."""
    import httpx

    from agent.fleet.data import build_report
    from agent.fleet.source import mirror_collector

    models, formats = ("resnet18",), ("eager", "onnx")
    # claims T0 + 2 days, arrived at T0 + 1 min (a node clock ahead); the real later run arrived at T0 + 1 day
    forged = make_document(make_node(0), models, formats, (1,), created_at=T0 + timedelta(days=2), seed=2)
    new = make_document(make_node(0), models, formats, (1,), created_at=T0 + timedelta(days=1), seed=3)
    page = [{"id": d.id, "received_at": at, "document": d.model_dump(mode="json")}
            for d, at in ((forged, "2025-05-01T00:01:00Z"), (new, "2025-05-02T00:00:05Z"))]

    def handler(request):
        assert request.url.path == "/v1/runs" and request.url.params["full"] == "true"
        return httpx.Response(200, json=page if request.url.params["offset"] == "0" else [])

    real = httpx.Client
    monkeypatch.setattr(httpx, "Client", lambda **kw: real(transport=httpx.MockTransport(handler), **kw))
    engine = mirror_collector("http://collector.test:8080", "token")
    try:
        report = build_report(engine)
        assert {r.run_id for r in report.rows} == {new.id}
        assert [r.throughput_ips for r in report.rows] == pytest.approx([r.throughput_ips for r in new.results])
    finally:
        engine.dispose()


# ---------------------------------------------------------------- issue #12: scenarios and stability
def test_scenario_table_ranks_valid_results_only_and_lists_invalid_with_reasons(tmp_path):
    """MLPerf scenario results get their own table (newest per node × model × backend ×
    scenario, a Triton-served one as triton-<format>): VALID ones are ranked, an INVALID
    one — here the highest server QPS of the fleet — is listed with LoadGen's reasons in
    HTML, Markdown and scenarios.csv and is never the best; sweeps are not affected."""
    from agent.fleet.data import build_report
    from agent.fleet.render import write_report

    url = f"sqlite:///{tmp_path / 'c.db'}"
    engine = make_engine(url)
    migrate(engine)
    sc = ("offline", "server")
    old = make_document(make_node(0), ("resnet18",), ("eager", "onnx"), (1,), created_at=T0, seed=1,
                        scenarios=sc, stability=True)
    new = make_document(make_node(0), ("resnet18",), ("onnx",), (8,), created_at=T0 + timedelta(hours=1),
                        seed=2, scenarios=("offline",))  # offline re-measured: newest wins
    fast = make_document(make_node(4), ("resnet18",), ("eager", "onnx"), (1,), created_at=T0, seed=3,
                         scenarios=sc, invalid=[("resnet18", "onnx", "server")])  # A100: fastest, INVALID
    served = make_document(make_node(1), ("resnet18",), ("onnx",), (1,), created_at=T0, seed=4,
                           scenarios=("server",), target="triton")
    assert ingest_many(engine, [old, new, fast, served]) == 4
    report = build_report(engine)
    engine.dispose()
    t = report.scenarios
    got = {(r.node, r.backend, r.scenario): r for r in t.rows}
    assert len(got) == len(t.rows) == 2 * 2 + 2 * 2 + 1
    assert ("node-0001", "triton-onnx", "server") in got
    newest = next(r for r in new.results if r.scenario)
    assert got[("node-0000", "onnx", "offline")].value == pytest.approx(newest.scenario.metric_value)
    assert got[("node-0000", "onnx", "offline")].run_id == new.id
    bad = got[("node-0004", "onnx", "server")]
    src = next(r.scenario for r in fast.results if r.scenario and r.scenario.name == "server" and r.format == "onnx")
    assert (bad.verdict, bad.reasons, bad.unit) == ("INVALID", "; ".join(src.invalid_reasons), "QPS at p99 bound")
    assert bad.value == max(r.value for r in t.rows if r.scenario == "server")  # the highest, yet not ranked
    best = {b["scenario"]: b for b in t.best}
    valid_server = [r for r in t.rows if r.scenario == "server" and r.verdict == "VALID"]
    top = max(valid_server, key=lambda r: r.value)
    assert (best["server"]["node"], best["server"]["backend"]) == (top.node, top.backend) != ("node-0004", "onnx")
    assert best["offline"]["node"] == "node-0004" and best["offline"]["unit"] == "samples/s"
    [g] = [g for g in t.summary if g["scenario"] == "server" and g["gpu"] == bad.gpu and g["backend"] == "onnx"]
    assert (g["nodes"], g["valid"], g["invalid"], g["best"]) == (1, 0, 1, None)
    assert t.invalid == [bad]
    assert len(report.rows) == 3 + 2 + 1  # the sweeps only: node 0 (eager, onnx at batch 1 and 8), 4, 1

    out = tmp_path / "r"
    write_report(report, out, ["html", "md", "csv"])
    from agent.fleet.render import _csv, _csv_tables

    ref = io.StringIO()
    _csv(ref, *_csv_tables(report)["scenarios.csv"])  # the safe writer, cell by cell
    assert (out / "scenarios.csv").read_text() == ref.getvalue()
    rows = read_csv(out / "scenarios.csv")
    assert {(x["node"], x["backend"], x["scenario"], x["verdict"]) for x in rows} == {
        (r.node, r.backend, r.scenario, r.verdict) for r in t.rows}
    assert next(x for x in rows if x["verdict"] == "INVALID")["reasons"] == bad.reasons
    md = (out / "report.md").read_text()
    assert "## MLPerf scenarios (LoadGen)" in md and "### INVALID results (1)" in md
    assert (f"| node-0004 | NVIDIA A100-SXM4-40GB | resnet18 | onnx | fp32 | 1 | server | INVALID | {bad.value:,.0f} "
            f"| QPS at p99 bound | {bad.reasons} |") in md
    assert f"| resnet18 | server | {top.node} | NVIDIA A100-SXM4-40GB | {top.backend} | 1 | {top.value:,.0f} |" in md
    html = (out / "report.html").read_text()
    assert html.count('<tr class="invalid">') == 2  # the INVALID list and the per-node table
    # the per-node sweep table shows cv and the speedup's 95 % interval (from the document)
    onnx = next(r for r in old.results if r.format == "onnx" and r.scenario is None)
    assert f"{onnx.speedup_vs_eager:.2f} [{onnx.speedup_ci_low:.2f}–{onnx.speedup_ci_high:.2f}]" in md
    assert f"| {onnx.throughput_ips:,.0f} | {onnx.cv_pct:.1f} |" in md


def test_cv_above_the_limit_is_flagged_unstable_and_never_best(tmp_path):
    """A result the bench called stable whose windows' coefficient of variation exceeds
    --max-cv is flagged ⚠ unstable (stable=False in results.csv) and not chosen as best;
    a higher limit accepts it."""
    from agent.fleet.data import build_report

    url = f"sqlite:///{tmp_path / 'c.db'}"
    engine = make_engine(url)
    migrate(engine)
    a = make_document(make_node(0), ("resnet18",), ("onnx",), (1,), created_at=T0, seed=1, stability=True)
    b = make_document(make_node(4), ("resnet18",), ("onnx",), (1,), created_at=T0, seed=2, stability=True)
    a.results[0].cv_pct, b.results[0].cv_pct = 1.0, 8.0  # node-0004 (A100) is the faster one
    ingest_many(engine, [a, b])
    strict, loose = build_report(engine), build_report(engine, max_cv_pct=10.0)
    engine.dispose()
    assert {r.node: r.stable for r in strict.rows} == {"node-0000": True, "node-0004": False}
    assert strict.best[0]["node"] == "node-0000" and strict.unstable == 1
    assert loose.best[0]["node"] == "node-0004" and loose.unstable == 0
    out = tmp_path / "r"
    r = run_agent("fleet", "report", "--db", url, "--out", str(out), "--format", "md,csv", env=agent_env())
    assert r.returncode == 0, r.stderr
    assert {x["node"]: (x["stable"], x["cv_pct"]) for x in read_csv(out / "results.csv")} == {
        "node-0000": ("True", "1"), "node-0004": ("False", "8")}
    assert "| 8.0 |" in (out / "report.md").read_text() and "⚠ unstable |" in (out / "report.md").read_text()
    r = run_agent("fleet", "report", "--db", url, "--out", str(out), "--max-cv", "0", env=agent_env())
    assert r.returncode == 2 and "--max-cv must be > 0" in r.stderr


def test_telemetry_shows_queue_vs_compute_power_and_utilisation(tmp_path):
    """Server-side split, utilisation and throughput per watt reach the per-node tables,
    the best configurations and results.csv; results without telemetry show dashes."""
    from agent.fleet.data import build_report
    from agent.schema import DeviceTelemetry, ServerMetrics

    url = f"sqlite:///{tmp_path / 'c.db'}"
    engine = make_engine(url)
    migrate(engine)
    a = make_document(make_node(0), ("resnet18",), ("onnx",), (1,), created_at=T0, seed=1, stability=True)
    b = make_document(make_node(4), ("resnet18",), ("onnx",), (1,), created_at=T0, seed=2, stability=True)
    r = a.results[0]
    r.server_metrics = ServerMetrics(request_success=100, client_requests=100, request_failure=0, inference_count=100,
                                     exec_count=100, request_us=900.0, queue_us=300.0, compute_input_us=10.0,
                                     compute_infer_us=580.0, compute_output_us=10.0)
    r.telemetry = DeviceTelemetry(source="nvml", samples=20, interval_ms=100, gpu_utilization_pct=75.0,
                                  gpu_power_w=200.0, gpu_memory_used_mb=1500.0)
    ingest_many(engine, [a, b])
    report = build_report(engine)
    engine.dispose()
    rows = {x.node: x for x in report.rows}
    got = rows["node-0000"]
    assert (got.queue_us, got.compute_us, got.power_w, got.utilization_pct) == (300.0, 600.0, 200.0, 75.0)
    assert got.ips_per_watt == pytest.approx(got.throughput_ips / 200.0)
    assert rows["node-0004"].power_w is None and rows["node-0004"].ips_per_watt is None
    out = tmp_path / "r"
    res = run_agent("fleet", "report", "--db", url, "--out", str(out), "--format", "md,html,csv", env=agent_env())
    assert res.returncode == 0, res.stderr
    md = (out / "report.md").read_text()
    assert "| 300 / 600 (33% queue) | 75 | 200 |" in md and "inf/s per W" in md
    assert "300 / 600 (33% queue)" in (out / "report.html").read_text()
    csv_rows = {x["node"]: x for x in read_csv(out / "results.csv")}
    assert (csv_rows["node-0000"]["queue_us"], csv_rows["node-0000"]["power_w"]) == ("300", "200")
    assert csv_rows["node-0004"]["power_w"] == ""


def test_invalid_reasons_are_read_from_the_document_also_in_another_layout():
    """scenarios.invalid_results decodes only the INVALID results of a stored document
    (as the collector stores it) and, for any other layout, the whole document."""
    import json

    from agent.fleet.scenarios import invalid_results

    doc = make_document(make_node(0), ("resnet18", "alexnet"), ("eager", "onnx"), (1,), scenarios=("server", "offline"),
                        scenario_models=("resnet18", "alexnet"),
                        invalid=[("alexnet", "onnx", "server"), ("resnet18", "eager", "offline")])
    want = [r.model_dump(mode="json") for r in doc.results if r.scenario and not r.scenario.valid]
    assert len(want) == 2 and invalid_results(doc.model_dump_json()) == want
    reordered = json.loads(doc.model_dump_json())
    reordered["results"] = [dict(reversed(list(r.items()))) for r in reordered["results"]]
    assert invalid_results(json.dumps(reordered)) == [dict(reversed(list(r.items()))) for r in want]
    assert invalid_results(make_document(make_node(0)).model_dump_json()) == []
