"""MLPerf scenarios through the real LoadGen (``mlperf_loadgen``), short settings: in-process
(ONNX Runtime) all four scenarios with their verdicts and metrics checked against LoadGen's
own logs, the server QPS search, INVALID runs with LoadGen's reasons; through a real
tritonserver over HTTP and gRPC; the CLI's one-line errors. Assertions are on structure and
consistency, never on speed."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import psutil
import pytest

from agent.bench.loadgen import Run, read_detail, read_verdict, search_server_qps
from agent.schema import ResultDocument
from testing.ports import free_port
from conftest import error_line, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MODEL = "mobilenet_v3_small"
SHORT = ("--min-duration", "0.5")


@pytest.fixture(scope="module")
def lab(built_engines, tmp_path_factory):
    root = tmp_path_factory.mktemp("loadgen")
    return {"engines": built_engines, "root": root, "env": {"INFERFLEET_STATE_DIR": str(root / "state")}}


def scenario(lab, name: str, *args: str, target: tuple[str, ...] = ()) -> dict:
    out = lab["root"] / f"{name}-{len(list(lab['root'].glob('*.json')))}.json"
    r = run_cli("bench", "--engines", str(lab["engines"]), "--models", MODEL, "--formats", "onnx",
                "--scenario", name, "--log-dir", str(lab["root"] / "logs"), "--json-file", str(out),
                *target, *args, env=lab["env"], timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "MLPerf LoadGen scenarios" in r.stdout
    doc = ResultDocument.model_validate_json(out.read_text())  # the schema the collector checks
    assert doc.schema_version == "1.2" and len(doc.results) == 1
    res = json.loads(out.read_text())["results"][0]
    s = res["scenario"]
    logs = Path(s["log_dir"])
    summary = (logs / "mlperf_log_summary.txt").read_text()
    valid, reasons = read_verdict(summary)
    assert (s["name"], s["valid"], s["invalid_reasons"]) == (name, valid, reasons)
    assert res["stable"] == s["valid"] and res["windows"] == 1 and res["cv_pct"] is None
    assert res["requests"] == s["queries"] > 0 and s["loadgen_version"].startswith("6.")
    assert not (logs / "mlperf_log_trace.json").exists()
    res["detail"] = read_detail((logs / "mlperf_log_detail.txt").read_text())
    res["summary"] = summary
    return res


def test_offline_inprocess(lab):
    res = scenario(lab, "offline", *SHORT, "--min-queries", "64", "--batch-sizes", "4")
    s, d = res["scenario"], res["detail"]
    assert s["valid"] and s["invalid_reasons"] == [] and s["metric"] == "samples_per_second"
    assert res["batch_size"] == 4 and s["queries"] == 1 and s["samples"] >= 64
    # LoadGen's samples/s is samples / the time the last one completed, and the run lasted min duration
    elapsed = d["result_max_latency_ns"] / 1e9
    assert s["metric_value"] == pytest.approx(s["samples"] / elapsed, rel=0.01)
    assert elapsed >= 0.5 and s["min_duration_ms"] == 500 and s["min_query_count"] == 64
    assert res["throughput_ips"] == pytest.approx(s["metric_value"], rel=1e-3)
    m = re.search(r"^Samples per second\s*:\s*([\d.]+)", res["summary"], re.M)
    assert m and float(m.group(1)) == pytest.approx(s["metric_value"], rel=1e-3)


def test_single_stream_inprocess(lab):
    res = scenario(lab, "single-stream", *SHORT, "--min-queries", "100")
    s, lat = res["scenario"], res["latency_ms"]
    assert s["valid"], s["invalid_reasons"]
    assert s["metric"] == "p90_latency_ms" and s["latency_percentile"] == 90
    assert s["samples"] == s["queries"] >= 100 and res["batch_size"] == 1
    # the early-stopping estimate of p90 is an upper percentile of LoadGen's own latencies
    assert lat["p90"] <= s["metric_value"] * 1.0001 <= lat["max"] * 1.0001
    assert lat["p50"] == pytest.approx(res["detail"]["result_50.00_percentile_latency_ns"] / 1e6)


def test_multi_stream_too_few_queries_is_invalid(lab):
    res = scenario(lab, "multi-stream", *SHORT, "--min-queries", "40", "--batch-sizes", "4")
    s = res["scenario"]
    assert not s["valid"] and not res["stable"]
    assert "Early stopping satisfied: NO" in s["invalid_reasons"]
    assert any("662" in r for r in s["invalid_reasons"]), s["invalid_reasons"]  # LoadGen's p99 minimum
    assert s["samples_per_query"] == 8 == res["batch_size"] and s["samples"] == 8 * s["queries"]
    assert s["metric"] == "p99_latency_ms" and s["latency_percentile"] == 99
    # latencies are per query of 8 samples
    assert res["latency_ms"]["max"] == pytest.approx(res["detail"]["result_max_query_latency_ns"] / 1e6)


def test_server_search_inprocess(lab):
    res = scenario(lab, "server", *SHORT, "--min-queries", "500", "--target-latency-ms", "500",
                   "--server-steps", "3", "--batch-sizes", "4")
    s = res["scenario"]
    tried = s["qps_tried"]
    assert 1 <= len(tried) <= 3 and s["target_latency_ms"] == 500 and s["latency_percentile"] == 99
    steps = {}
    for q in tried:
        summary = (Path(s["log_dir"]).parent / f"qps-{q:09.2f}" / "mlperf_log_summary.txt").read_text()
        steps[q] = read_verdict(summary)[0]
    valid = [q for q, ok in steps.items() if ok]
    if valid:
        best = max(valid)
        assert s["valid"] and s["target_qps"] == best
        assert all(not steps[q] for q in tried if q > best)  # every higher target was INVALID
        assert s["metric"] == "scheduled_qps" and s["metric_value"] > 0
        assert s["metric_value"] == pytest.approx(res["detail"]["result_scheduled_samples_per_sec"])
        higher = [q for q in tried if q > best]
        assert len(tried) == 3 or (higher and min(higher) <= best * 1.05 + 0.01)  # a bound or the bracket
    else:
        assert not s["valid"] and s["invalid_reasons"]


def test_server_impossible_latency_is_invalid(lab):
    res = scenario(lab, "server", *SHORT, "--min-queries", "100", "--server-qps", "50",
                   "--target-latency-ms", "0.01")
    s = res["scenario"]
    assert not s["valid"] and s["qps_tried"] == [50] and s["target_qps"] == 50
    assert "Performance constraints satisfied: NO" in s["invalid_reasons"]
    assert "Reduce target QPS to improve latency." in s["invalid_reasons"]
    assert res["detail"]["result_overlatency_query_count"] == s["queries"]


def test_server_search_logic():
    """The search itself, with a deterministic verdict (VALID up to 37 QPS)."""
    def run_at(qps: float) -> Run:
        return Run(scenario="server", log_dir=Path("."), valid=qps <= 37, reasons=[], detail={},
                   target_qps=qps, settings={}, elapsed_s=1.0)

    best, tried = search_server_qps(run_at, 10, 20)
    assert best.valid and 37 / 1.05 <= best.target_qps <= 37 and tried[:3] == [10, 20, 40]
    best, tried = search_server_qps(run_at, 10, 2)
    assert tried == [10, 20] and best.target_qps == 20
    never = lambda q: Run("server", Path("."), False, ["x"], {}, q, {}, 1.0)  # noqa: E731
    best, tried = search_server_qps(never, 8, 20)
    assert not best.valid and tried == [8, 4, 2, 1, 0.5]  # halved down to the floor
    best, tried = search_server_qps(never, 8, 20, floor_qps=3)
    assert tried == [8, 4, 3] and best.target_qps == 3


# ------------------------------------------------------------------ Triton
@pytest.fixture(scope="module")
def triton(lab):
    root = lab["root"] / "triton"
    engines = root / "engines"
    shutil.copytree(lab["engines"], engines, ignore=shutil.ignore_patterns("triton-repo"))
    env = lab["env"]
    r = run_cli("repo", "--engines", str(engines), "--repo", str(root / "repo"), "--models", MODEL,
                "--formats", "onnx", "--backend", "python", env=env)
    assert r.returncode == 0, r.stderr
    ports = [free_port(), free_port(), free_port()]
    state = root / "state"
    r = run_cli("serve", "start", "--repo", str(root / "repo"), "--state-dir", str(state), "--http-port",
                str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]), "--timeout", "180",
                env=env, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    yield {"engines": engines, "http": f"127.0.0.1:{ports[0]}", "grpc": f"127.0.0.1:{ports[1]}"}
    pid = json.loads((state / "server.json").read_text()).get("pid") if (state / "server.json").exists() else None
    run_cli("serve", "stop", "--state-dir", str(state), env=env)
    if pid is not None and psutil.pid_exists(pid):
        psutil.Process(pid).kill()


@pytest.mark.triton
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_scenarios(lab, triton, protocol):
    served = {**lab, "engines": triton["engines"]}
    target = ("--target", "triton", "--protocol", protocol, "--url", triton[protocol], "--concurrency", "2")
    off = scenario(served, "offline", *SHORT, "--min-queries", "64", "--batch-sizes", "2", target=target)
    s = off["scenario"]
    assert s["valid"], s["invalid_reasons"]
    assert (off["triton_model"], off["protocol"], off["concurrency"], off["batch_size"]) == (
        f"{MODEL}_onnx", protocol, 2, 2)
    assert s["metric_value"] == pytest.approx(s["samples"] / (off["detail"]["result_max_latency_ns"] / 1e9), rel=0.01)
    srv = scenario(served, "server", *SHORT, "--min-queries", "100", "--server-qps", "20", target=target)
    s = srv["scenario"]
    assert s["qps_tried"] == [20] and s["samples"] == s["queries"] >= 100
    assert srv["protocol"] == protocol and s["target_latency_ms"] == 15  # LoadGen's resnet50 default
    assert s["valid"] == read_verdict(srv["summary"])[0]


# ------------------------------------------------------------------ CLI errors
def test_cli_errors(lab):
    base = ("bench", "--engines", str(lab["engines"]), "--models", MODEL, "--formats", "onnx")
    cases = [
        (("--scenario", "batch"), "unknown --scenario 'batch'"),
        (("--min-duration", "1"), "--min-duration needs --scenario"),
        (("--scenario", "offline", "--target-latency-ms", "5"), "apply to --scenario server only"),
        (("--scenario", "server", "--target-latency-ms", "0"), "--target-latency-ms must be > 0"),
        (("--scenario", "offline", "--min-queries", "0"), "--min-queries must be >= 1"),
        (("--scenario", "server", "--server-steps", "0"), "--server-steps must be >= 1"),
        (("--scenario", "offline", "--csv-file", str(lab["root"] / "x.csv")), "--csv-file"),
    ]
    for args, msg in cases:
        assert msg in error_line(run_cli(*base, *args, env=lab["env"], timeout=120)), args
    gone = run_cli("bench", "--target", "triton", "--url", f"127.0.0.1:{free_port()}", "--engines",
                   str(lab["engines"]), "--scenario", "offline", "--min-duration", "0.2", env=lab["env"])
    assert "Triton" in error_line(gone)

