"""In-process bench on real engines: eager baseline, TorchScript, ONNX Runtime;
percentiles, interleaved speedups with their interval, stability, memory, node
facts, the JSON document, the CLI; the interval math on a synthetic drifting load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import error_line, run_cli

from agent.bench.inprocess import run_inprocess
from agent.bench.measure import (
    Window,
    measure_interleaved,
    measure_until_stable,
    paired_ratio,
    t975,
)
from agent.bench.options import BenchOptions
from agent.bench.table import results_table
from agent.config import AgentConfig
from agent.errors import AgentError
from agent.schema import ResultDocument


def _opts(engines: Path, **kw) -> BenchOptions:
    base = dict(models=["squeezenet1_1"], formats=[], batch_sizes=[1, 2], engines_dir=engines,
                warmup=1, iterations=3, max_windows=3, stability_pct=50.0)
    return BenchOptions(**{**base, **kw})


@pytest.mark.slow
def test_inprocess_bench_measures_every_format(built_engines, tmp_path):
    doc = run_inprocess(_opts(built_engines, rounds=3), AgentConfig(node_name="t", state_dir=tmp_path))
    assert doc.target == "inprocess" and doc.schema_version == "1.2"
    assert doc.settings.omp_wait_policy == "PASSIVE"  # agent/__init__.py, the test environment sets none
    got = {(r.format, r.batch_size) for r in doc.results}
    assert got == {(f, b) for f in ("eager", "torchscript", "onnx") for b in (1, 2)}
    for r in doc.results:
        lat = r.latency_ms
        assert 0 < lat.min <= lat.p50 <= lat.p90 <= lat.p95 <= lat.p99 <= lat.max
        assert r.throughput_ips > 0 and r.requests >= 3 and r.windows == 3 and r.cv_pct is not None
        assert r.peak_host_mem_mb and r.peak_host_mem_mb > 0.5
        assert r.peak_gpu_mem_mb is None and r.device == "cpu"
        t = r.telemetry  # this format's windows only: CPU time of this process over their wall time
        assert t.source == "psutil" and t.samples >= 3 and t.cpu_utilization_pct > 0 and t.rss_mb > 100
        if r.format == "eager":  # the reference: exactly 1, no interval
            assert (r.speedup_vs_eager, r.speedup_ci_low, r.speedup_ci_high, r.speedup_pairs) == \
                (1.0, None, None, None)
        else:  # paired with eager's window of the same round, 3 rounds
            assert 0 < r.speedup_ci_low <= r.speedup_vs_eager <= r.speedup_ci_high, r
            assert r.speedup_pairs == 3
    assert doc.node.node_name == "t" and doc.node.cpu_count and doc.node.torch_version
    assert doc.settings.iterations == 3 and doc.settings.window_seconds is None
    again = ResultDocument.model_validate_json(doc.model_dump_json())
    assert again == doc
    assert results_table(doc).row_count == 6


@pytest.mark.slow
def test_peak_memory_is_the_engines_own_not_what_earlier_models_left(built_engines, tmp_path):
    """resnet18 (45 MB of weights) first, then squeezenet1_1 (5 MB) in the same process:
    squeezenet's figure must not include what resnet18 left behind, nor onnx's what eager
    (loaded before it and still alive for the interleaved rounds) holds."""
    import psutil

    doc = run_inprocess(_opts(built_engines, models=["resnet18", "squeezenet1_1"], formats=["eager", "onnx"],
                              batch_sizes=[1]), AgentConfig(node_name="t", state_dir=tmp_path))
    mem = {(r.model, r.format): r.peak_host_mem_mb for r in doc.results}
    rss_mb = psutil.Process().memory_info().rss / 2**20
    for fmt in ("eager", "onnx"):
        assert 0 < mem[("squeezenet1_1", fmt)] < mem[("resnet18", fmt)], mem
        assert mem[("squeezenet1_1", fmt)] < rss_mb / 2, (mem, rss_mb)


@pytest.mark.slow
def test_inprocess_bench_refuses_bad_requests_before_running(built_engines, tmp_path):
    cfg = AgentConfig(node_name="t", state_dir=tmp_path)
    with pytest.raises(AgentError, match=r"--rounds must be >= 2"):
        run_inprocess(_opts(built_engines, rounds=1), cfg)
    with pytest.raises(AgentError, match="above squeezenet1_1_onnx's max batch 4"):
        run_inprocess(_opts(built_engines, formats=["onnx"], batch_sizes=[1, 8]), cfg)
    with pytest.raises(AgentError, match=r"unknown format 'onnxx' \(did you mean onnx"):
        run_inprocess(_opts(built_engines, formats=["onnxx"]), cfg)
    with pytest.raises(AgentError, match="no shufflenet_v2_x0_5_onnx engine"):
        run_inprocess(_opts(built_engines, models=["shufflenet_v2_x0_5"], formats=["onnx"]), cfg)
    with pytest.raises(AgentError, match="no manifest.json"):
        run_inprocess(_opts(tmp_path / "nothing", formats=["onnx"]), cfg)


@pytest.mark.slow
def test_eager_only_needs_no_engines_and_no_eager_means_no_speedup(built_engines, tmp_path):
    cfg = AgentConfig(node_name="t", state_dir=tmp_path)
    doc = run_inprocess(_opts(tmp_path / "none", formats=["eager"], batch_sizes=[1]), cfg)
    assert [(r.format, r.batch_size, r.speedup_vs_eager) for r in doc.results] == [("eager", 1, 1.0)]
    doc = run_inprocess(_opts(built_engines, formats=["onnx"], batch_sizes=[1]), cfg)
    assert [(r.format, r.speedup_vs_eager, r.speedup_pairs) for r in doc.results] == [("onnx", None, None)]


@pytest.mark.slow
def test_bench_cli_writes_json_and_spools(built_engines, tmp_path):
    out = tmp_path / "result.json"
    state = tmp_path / "state"
    proc = run_cli("bench", "--engines", str(built_engines), "--models", "mobilenet_v3_small",
                   "--formats", "eager,onnx", "--batch-sizes", "1", "--warmup", "1",
                   "--iterations", "3", "--max-windows", "3", "--rounds", "2", "--json-file", str(out),
                   env={"INFERFLEET_STATE_DIR": str(state), "INFERFLEET_NODE_NAME": "cli-node"})
    assert proc.returncode == 0, proc.stderr
    assert "mobilenet_v3_small" in proc.stdout and "speedup" in proc.stdout
    doc = ResultDocument.model_validate(json.loads(out.read_text()))
    assert doc.node.node_name == "cli-node" and len(doc.results) == 2
    onnx = next(r for r in doc.results if r.format == "onnx")
    assert onnx.speedup_pairs == 2 and f"{onnx.speedup_vs_eager:.2f}x [{onnx.speedup_ci_low:.2f}–" in proc.stdout
    assert "⚠ 2 of 2 results unstable" in proc.stdout  # 2 windows each: too few to be stable
    assert list((state / "spool").glob("*.json")), "the result is spooled for the collector"


@pytest.mark.slow
def test_bench_cli_batch_above_max_is_one_line(built_engines, tmp_path):
    proc = run_cli("bench", "--engines", str(built_engines), "--models", "squeezenet1_1",
                   "--formats", "onnx", "--batch-sizes", "1,32",
                   env={"INFERFLEET_STATE_DIR": str(tmp_path)})
    assert "batch size 32 is above squeezenet1_1_onnx's max batch 4" in error_line(proc)


def test_interleaved_speedup_survives_a_drifting_load():
    """A synthetic machine whose load halves every throughput over the run, the engine always
    2.5x eager: interleaved rounds give 2.5 inside a tight interval; the old way (all of eager's
    windows, then all of the engine's, ratio of their throughputs) is off by the drift."""
    ran = [0]  # windows run so far: the synthetic clock

    def window_of(base_ips: float):
        def run() -> Window:
            ips = base_ips * 0.5 ** (ran[0] / 16)
            ran[0] += 1
            return Window([1 / ips] * 10, 10 / ips)
        return run

    ws = measure_interleaved({"eager": window_of(100.0), "onnx": window_of(250.0)},
                             stability_pct=10.0, max_windows=8, rounds=8)
    assert [len(w) for w in ws.values()] == [8, 8] and ran[0] == 16
    r = paired_ratio([w.throughput for w in ws["onnx"]], [w.throughput for w in ws["eager"]])
    assert r.pairs == 8 and r.estimate == pytest.approx(2.5, rel=1e-9)
    assert r.low < 2.5 < r.high and r.high / r.low < 1.1

    ran[0] = 0
    eager = measure_until_stable(window_of(100.0), 1, stability_pct=1.0, max_windows=8)
    onnx = measure_until_stable(window_of(250.0), 1, stability_pct=1.0, max_windows=8)
    separate = onnx.throughput_ips / eager.throughput_ips
    assert separate == pytest.approx(2.5 * 0.5 ** 0.5, rel=1e-6) and not r.low <= separate <= r.high
    assert not eager.stable and eager.cv_pct > 2  # the drift shows in the absolute figures' cv


def test_interval_math():
    assert (t975(1), t975(4), t975(30)) == (12.706, 2.776, 2.042)
    assert t975(31) == pytest.approx(2.040, abs=0.002) and t975(10_000) == pytest.approx(1.960, abs=0.001)
    one = paired_ratio([3.0], [1.5])
    assert (one.estimate, one.low, one.high, one.pairs) == (pytest.approx(2.0), None, None, 1)
    # log ratios ln2 ± 0.1: mean ln2, sd 0.1*sqrt(2), half-width t(1)*0.1 → 2·e^{±1.2706}
    r = paired_ratio([2 * 2.718281828 ** 0.1, 2 * 2.718281828 ** -0.1], [1.0, 1.0])
    assert r.estimate == pytest.approx(2.0) and r.pairs == 2
    assert (r.low, r.high) == (pytest.approx(2 * 2.718281828 ** -1.2706), pytest.approx(2 * 2.718281828 ** 1.2706))
