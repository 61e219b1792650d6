"""``agent tune``: the search algorithm on a synthetic landscape (a measure function of
the configuration: the search's own logic, no Triton), schema 1.2 and the collector's
columns of a tuning point, the fleet report's tuning section from documents, and one
real search against the bundled tritonserver (tiny grid, short windows) whose winner is
written back and served after ``agent serve reload``.

``check_tuned_repository`` and ``check_report_tuning`` are the checks the e2e fleet test
can reuse on each node's repository and on the report."""

from __future__ import annotations

import json
import re
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent.schema import BenchResult, ResultDocument, TuningPoint
from agent.tune.search import Config, Grid, Point, Search

T0 = datetime(2025, 6, 1, tzinfo=UTC)


# ----------------------------------------------------------------- the search
def landscape(budget_ok_instances: int = 2):
    """Throughput grows with instances up to 2 and with max batch when dynamic batching
    groups requests (more with a longer delay); p99 grows with concurrency, the delay and
    instances beyond ``budget_ok_instances``."""
    calls: list[tuple[Config, int]] = []

    def measure(c: Config, conc: int) -> Point:
        calls.append((c, conc))
        per = 100.0 * min(c.instances, 2)
        batch = min(c.max_batch_size, conc) if c.dynamic_batching else 1
        ips = per * (1 + 0.3 * (batch - 1) ** 0.5) * min(conc, 4) / 4 * (1 + (c.queue_delay_us or 0) / 20_000)
        p99 = 5.0 * conc + (c.queue_delay_us or 0) / 1000 + (40 if c.instances > budget_ok_instances else 0)
        return Point(c, conc, ips, p99)

    return measure, calls


GRID = Grid(instances=(1, 2, 3), max_batch_size=(1, 4, 8), queue_delay_us=(None, 0, 1000),
            concurrency=(1, 2, 4, 8))


def test_brute_tries_every_configuration_and_picks_the_best_within_budget():
    measure, calls = landscape()
    out = Search(GRID, measure, p99_budget_ms=30.0).brute()
    assert len(calls) == len(set(calls)) == len(out.points)  # nothing measured twice
    assert set(out.best) == set(GRID.configs())
    assert out.chosen is not None and out.chosen.p99_ms <= 30.0
    best = max((p for p in out.points if p.p99_ms <= 30.0), key=lambda p: p.throughput_ips)
    assert out.chosen.throughput_ips == best.throughput_ips
    assert out.chosen.config.instances == 2 and out.chosen.config.dynamic_batching  # 3 instances: over budget
    # concurrency stops at the first point over budget: 8 (40 ms) is never measured past 4
    assert all(p.p99_ms <= 30.0 or p.concurrency == max(q.concurrency for q in out.points if q.config == p.config)
               for p in out.points)


def test_quick_climbs_to_the_optimum_with_fewer_points():
    measure, _ = landscape()
    brute = Search(GRID, measure, 30.0).brute()
    measure, calls = landscape()
    quick = Search(GRID, measure, 30.0).quick()
    assert quick.search == "quick" and quick.chosen is not None
    assert len(calls) < len(brute.points)
    assert quick.chosen.throughput_ips >= 0.95 * brute.chosen.throughput_ips
    # it started at the smallest configuration and never went to 3 instances' neighbours beyond budget
    assert quick.points[0].config == GRID.start()


def test_a_direction_over_budget_is_closed_and_nothing_within_budget_chooses_nothing():
    measure, calls = landscape(budget_ok_instances=1)  # 2+ instances: +40 ms
    out = Search(GRID, measure, 30.0).quick()
    assert out.chosen is not None and out.chosen.config.instances == 1
    assert not any(c.instances == 3 for c, _ in calls)  # never climbed past the closed axis
    measure, _ = landscape()
    none = Search(GRID, measure, p99_budget_ms=1.0).quick()
    assert none.chosen is None and none.points


def test_cost_objective_and_bad_input():
    measure, _ = landscape()
    by_cost = Search(GRID, measure, 30.0, objective="cost", price_per_hour=2.0).brute()
    measure, _ = landscape()
    by_ips = Search(GRID, measure, 30.0).brute()
    assert by_cost.chosen.config == by_ips.chosen.config  # one node, one price: the same winner
    with pytest.raises(ValueError):
        Search(GRID, measure, 30.0, objective="latency")
    with pytest.raises(ValueError):
        Search(GRID, measure, 0.0)
    with pytest.raises(ValueError):
        Grid(instances=())
    assert Config(1, 8, None, "max").preferred == "none"  # preferred sizes need dynamic batching
    assert Config(1, 16, 100, "ladder").preferred_batch_sizes == (4, 8, 16)


def test_cli_refuses_bad_options(cli, tmp_path):
    from conftest import error_line

    assert "--p99-budget-ms must be > 0" in error_line(cli("tune", "--no-write"))
    assert "--search" in error_line(cli("tune", "--p99-budget-ms", "5", "--search", "random", "--no-write"))
    assert "--queue-delays" in error_line(cli("tune", "--p99-budget-ms", "5", "--queue-delays", "x", "--no-write"))
    assert "does not exist" in error_line(cli("tune", "--p99-budget-ms", "5", "--repo", str(tmp_path / "no")))


# ---------------------------------------------------- schema and the collector
def tuning_doc(node: int = 0, gpu: str | None = "NVIDIA A10", price: float | None = 1.2,
               created: datetime = T0, chosen_ips: float = 300.0, default_ips: float = 200.0) -> ResultDocument:
    """One node's tuning run: two default points, three search points, the last one chosen."""
    from testing.synthetic_fleet import make_node

    n = make_node(node)
    n = n.model_copy(update={"gpu_name": gpu, "price_per_hour": price})
    pts = [  # (instances, max batch, delay, concurrency, ips, p99, search, chosen)
        (1, 4, 100, 1, default_ips * 0.7, 8.0, "default", False),
        (1, 4, 100, 2, default_ips, 12.0, "default", False),
        (1, 1, None, 2, 150.0, 10.0, "quick", False),
        (2, 1, None, 2, 250.0, 30.0, "quick", False),  # over the 20 ms budget
        (1, 4, 500, 4, chosen_ips, 18.0, "quick", True),
    ]
    results = []
    for inst, mb, delay, conc, ips, p99, search, chosen in pts:
        lat = {"p50": p99 / 2, "p90": p99 * 0.8, "p95": p99 * 0.9, "p99": p99, "mean": p99 / 2, "min": 1.0,
               "max": p99 * 1.1, "std": 1.0}
        results.append(BenchResult.model_validate({
            "model": "squeezenet1_1", "format": "onnx", "batch_size": 1, "concurrency": conc,
            "triton_model": "squeezenet1_1_onnx", "protocol": "http", "latency_ms": lat, "throughput_ips": ips,
            "requests": 100, "windows": 3, "stable": True, "cv_pct": 1.0,
            "tuning": TuningPoint(instances=inst, max_batch_size=mb, dynamic_batching=delay is not None,
                                  preferred_batch_sizes=[4] if search == "default" else [], queue_delay_us=delay,
                                  search="quick", default=search == "default", p99_budget_ms=20.0,
                                  within_budget=p99 <= 20.0, chosen=chosen)}))
    return ResultDocument.model_validate({
        "target": "triton", "node": n.model_dump(), "created_at": created, "id": f"tune-{node}-{created:%H%M%S}",
        "settings": {"warmup": 1, "window_seconds": 0.5, "stability_pct": 10, "max_windows": 3},
        "results": [r.model_dump() for r in results]})


def test_schema_1_2_carries_tuning_and_older_versions_refuse_it():
    doc = tuning_doc()
    assert doc.schema_version == "1.2"
    again = ResultDocument.model_validate_json(doc.model_dump_json())
    assert again.results[-1].tuning.chosen and again.results[0].tuning.default
    raw = json.loads(doc.model_dump_json())
    for version in ("1.0", "1.1"):
        with pytest.raises(ValidationError, match=f"results.0.tuning needs schema_version 1.2 "
                                                  f"\\(the document says {version}\\)"):
            ResultDocument.model_validate({**raw, "schema_version": version,
                                           "results": [{k: v for k, v in r.items() if k not in ("cv_pct",)}
                                                       for r in raw["results"]]})


def test_collector_stores_tuning_points_and_the_report_keeps_them_out_of_rankings(tmp_path):
    from sqlalchemy import text

    from agent.collector.db import current_revision, make_engine, migrate
    from agent.collector.ingest import ingest
    from agent.fleet.data import build_report
    from testing.synthetic_fleet import make_document, make_node

    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    migrate(engine)
    assert current_revision(engine) >= "0003"  # the tuning columns exist from 0003 on
    assert ingest(engine, tuning_doc())
    assert ingest(engine, make_document(make_node(0), ("resnet18",), batch_sizes=(1,), concurrencies=(1,),
                                       created_at=T0, seed=1))
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT tuning, tuning_chosen, concurrency FROM results WHERE model = "
                                 "'squeezenet1_1' ORDER BY id")).all()
    assert len(rows) == 5 and [bool(r[1]) for r in rows] == [False] * 4 + [True]
    assert json.loads(rows[-1][0])["queue_delay_us"] == 500
    report = build_report(engine)
    assert {r.model for r in report.rows} == {"resnet18"}  # tuning points are not ranked
    assert [n.model for n in report.tuning.nodes] == ["squeezenet1_1"]
    engine.dispose()


def test_fleet_report_tuning_section(tmp_path):
    from agent.collector.db import make_engine, migrate
    from agent.collector.ingest import ingest_many
    from agent.fleet.data import build_report
    from agent.fleet.render import write_report

    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    migrate(engine)
    docs = [tuning_doc(0, created=T0 - timedelta(hours=1), chosen_ips=100.0),  # older run of node 0
            tuning_doc(0), tuning_doc(1, chosen_ips=330.0), tuning_doc(2, gpu=None, price=None, chosen_ips=90.0,
                                                                       default_ips=90.0)]
    assert ingest_many(engine, docs) == 4
    report = build_report(engine)
    engine.dispose()
    nodes = {n.node: n for n in report.tuning.nodes}
    assert len(nodes) == 3 and nodes["node-0000"].chosen.throughput_ips == 300.0  # the newest run only
    n0 = nodes["node-0000"]
    assert n0.default.throughput_ips == 200.0 and n0.ratio == pytest.approx(1.5)
    assert n0.chosen.config == "1 inst, max batch 4, dyn batching 500us" and len(n0.points) == 5
    assert n0.chosen_cost == pytest.approx(1.2 / (300 * 3600) * 1e6)
    a10 = next(g for g in report.tuning.by_gpu if g["gpu"] == "NVIDIA A10")
    assert a10["nodes"] == 2 and a10["chosen_ips"] == 315.0 and a10["default_ips"] == 200.0
    out = write_report(report, tmp_path / "report", ["html", "md"])
    html = (tmp_path / "report" / "report.html").read_text()
    md = (tmp_path / "report" / "report.md").read_text()
    check_report_tuning(html, md, "squeezenet1_1", ["node-0000", "node-0001", "node-0002"])
    assert len(out) == 2


def check_report_tuning(html: str, md: str, model: str, nodes: list[str]) -> None:
    """The report's tuning section names every tuned node of ``model`` with a chosen
    configuration, its figure is drawn, and the ranking sections do not list tuning points."""
    assert 'id="tuning"' in html and f'id="tuning-{model}"' in html
    section = html[html.index('id="tuning"'):html.index('id="models"')]
    assert "agent tune: throughput against p99" in section and "<svg" in section
    for n in nodes:
        assert n in section, n
    assert "Tuned serving configurations" in md
    md_section = md[md.index("## Tuned serving configurations"):md.index("## Results per model")]
    assert re.search(r"\| \d+ inst, max batch \d+, dyn batching ", md_section), md_section


# ------------------------------------------------------------- a real server
def check_tuned_repository(model_dir: Path, doc: dict) -> dict:
    """``model_dir``'s config.pbtxt is the chosen point's configuration, with the note of
    the search; returns the chosen point's tuning."""
    chosen = [r for r in doc["results"] if r.get("tuning") and r["tuning"]["chosen"]]
    assert len(chosen) == 1, [r.get("tuning") for r in doc["results"]]
    t = chosen[0]["tuning"]
    assert t["within_budget"] and chosen[0]["latency_ms"]["p99"] <= t["p99_budget_ms"]
    text = (Path(model_dir) / "config.pbtxt").read_text()
    assert text.startswith(f"# Tuned by `agent tune --search {t['search']}"), text[:200]
    assert f"p99 budget of {t['p99_budget_ms']:g} ms" in text
    assert re.search(rf"^max_batch_size: {t['max_batch_size']}$", text, re.MULTILINE)
    assert re.search(rf"instance_group {{\s+count: {t['instances']}\s", text)
    assert ("dynamic_batching {" in text) == t["dynamic_batching"]
    if t["dynamic_batching"]:
        assert f"max_queue_delay_microseconds: {t['queue_delay_us']}" in text
    return t


@pytest.mark.triton
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tune_against_a_real_tritonserver(built_engines, tmp_path):
    """squeezenet1_1 ONNX through the python backend: brute search over 4 configurations
    at one concurrency (plus the default), 0.3 s windows. Asserts structure only: the
    points, one chosen within the (generous) budget, written back, served after reload."""
    from agent.triton.client import TritonAPI
    import psutil
    from conftest import run_cli

    from testing.ports import free_port

    engines = tmp_path / "engines"
    shutil.copytree(built_engines, engines, ignore=shutil.ignore_patterns("triton-repo"))
    repo, state = tmp_path / "repo", tmp_path / "state"
    env = {"INFERFLEET_STATE_DIR": str(tmp_path / "agent-state")}
    r = run_cli("repo", "--engines", str(engines), "--repo", str(repo), "--models", "squeezenet1_1",
                "--formats", "onnx", "--backend", "python", env=env)
    assert r.returncode == 0, r.stderr
    ports = [free_port(), free_port(), free_port()]
    url = f"127.0.0.1:{ports[0]}"
    r = run_cli("serve", "start", "--repo", str(repo), "--state-dir", str(state), "--http-port", str(ports[0]),
                "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]), "--timeout", "180", env=env,
                timeout=240)
    pid = None
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        pid = json.loads((state / "server.json").read_text())["pid"]
        out = tmp_path / "tune.json"
        r = run_cli("tune", "--models", "squeezenet1_1", "--formats", "onnx", "--engines", str(engines),
                    "--repo", str(repo), "--url", url, "--p99-budget-ms", "5000", "--search", "brute",
                    "--instances", "1", "--max-batch", "1,4", "--queue-delays", "off,0", "--concurrency", "2",
                    "--warmup", "1", "--duration", "0.3", "--max-windows", "3", "--json-file", str(out),
                    env=env, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        doc = json.loads(out.read_text())
        assert doc["schema_version"] == "1.2" and doc["target"] == "triton"
        points = [x["tuning"] for x in doc["results"]]
        assert len(points) == 5 and all(p["p99_budget_ms"] == 5000 for p in points)
        assert all(p["search"] == "brute" for p in points)
        assert sum(p["default"] for p in points) == 1  # agent repo's default: max batch 4, 100 us
        assert {(p["max_batch_size"], p["queue_delay_us"]) for p in points if not p["default"]} == {
            (1, None), (1, 0), (4, None), (4, 0)}
        t = check_tuned_repository(repo / "squeezenet1_1_onnx", doc)
        assert "chose" in " ".join(r.stdout.split())
        spooled = list((tmp_path / "agent-state" / "spool").glob("*.json"))
        assert len(spooled) == 1 and json.loads(spooled[0].read_text())["id"] == doc["id"]
        # the server serves the written configuration (tune reloaded it from its file), and reload agrees
        r = run_cli("serve", "reload", "--state-dir", str(state), "--repo", str(repo), env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        with TritonAPI(url) as api:
            cfg = api.model_config("squeezenet1_1_onnx")
        assert cfg["max_batch_size"] == t["max_batch_size"]
        assert cfg["instance_group"][0]["count"] == t["instances"]
        assert ("dynamic_batching" in cfg) == t["dynamic_batching"]
    finally:
        run_cli("serve", "stop", "--state-dir", str(state), env=env)
        if pid is not None and psutil.pid_exists(pid):
            psutil.Process(pid).kill()
