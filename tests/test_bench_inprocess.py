"""In-process bench on real engines: eager baseline, TorchScript, ONNX Runtime;
percentiles, speedups, memory, node facts, the JSON document, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.bench.inprocess import run_inprocess
from agent.bench.options import BenchOptions
from agent.bench.table import results_table
from agent.config import AgentConfig
from agent.errors import AgentError
from agent.schema import ResultDocument
from conftest import error_line, run_cli

pytestmark = pytest.mark.slow


def _opts(engines: Path, **kw) -> BenchOptions:
    base = dict(models=["squeezenet1_1"], formats=[], batch_sizes=[1, 2], engines_dir=engines,
                warmup=1, iterations=3, max_windows=3, stability_pct=50.0)
    return BenchOptions(**{**base, **kw})


def test_inprocess_bench_measures_every_format(built_engines, tmp_path):
    doc = run_inprocess(_opts(built_engines), AgentConfig(node_name="t", state_dir=tmp_path))
    assert doc.target == "inprocess" and doc.schema_version == "1.1"
    got = {(r.format, r.batch_size) for r in doc.results}
    assert got == {(f, b) for f in ("eager", "torchscript", "onnx") for b in (1, 2)}
    for r in doc.results:
        lat = r.latency_ms
        assert 0 < lat.min <= lat.p50 <= lat.p90 <= lat.p95 <= lat.p99 <= lat.max
        assert r.throughput_ips > 0 and r.requests >= 3 and 1 <= r.windows <= 3
        assert r.peak_host_mem_mb and r.peak_host_mem_mb > 0.5
        assert r.peak_gpu_mem_mb is None and r.device == "cpu"
        assert r.speedup_vs_eager is not None
        if r.format == "eager":
            assert r.speedup_vs_eager == 1.0
    assert doc.node.node_name == "t" and doc.node.cpu_count and doc.node.torch_version
    assert doc.settings.iterations == 3 and doc.settings.window_seconds is None
    again = ResultDocument.model_validate_json(doc.model_dump_json())
    assert again == doc
    assert results_table(doc).row_count == 6


def test_peak_memory_is_the_engines_own_not_what_earlier_models_left(built_engines, tmp_path):
    """resnet18 (45 MB of weights) first, then squeezenet1_1 (5 MB) in the same process:
    squeezenet's figure must not include what resnet18 left behind."""
    import psutil

    doc = run_inprocess(_opts(built_engines, models=["resnet18", "squeezenet1_1"], formats=["eager", "onnx"],
                              batch_sizes=[1]), AgentConfig(node_name="t", state_dir=tmp_path))
    mem = {(r.model, r.format): r.peak_host_mem_mb for r in doc.results}
    rss_mb = psutil.Process().memory_info().rss / 2**20
    for fmt in ("eager", "onnx"):
        assert 0 < mem[("squeezenet1_1", fmt)] < mem[("resnet18", fmt)], mem
        assert mem[("squeezenet1_1", fmt)] < rss_mb / 2, (mem, rss_mb)


def test_inprocess_bench_refuses_bad_requests_before_running(built_engines, tmp_path):
    cfg = AgentConfig(node_name="t", state_dir=tmp_path)
    with pytest.raises(AgentError, match="above squeezenet1_1_onnx's max batch 4"):
        run_inprocess(_opts(built_engines, formats=["onnx"], batch_sizes=[1, 8]), cfg)
    with pytest.raises(AgentError, match=r"unknown format 'onnxx' \(did you mean onnx"):
        run_inprocess(_opts(built_engines, formats=["onnxx"]), cfg)
    with pytest.raises(AgentError, match="no shufflenet_v2_x0_5_onnx engine"):
        run_inprocess(_opts(built_engines, models=["shufflenet_v2_x0_5"], formats=["onnx"]), cfg)
    with pytest.raises(AgentError, match="no manifest.json"):
        run_inprocess(_opts(tmp_path / "nothing", formats=["onnx"]), cfg)


def test_eager_only_needs_no_engines(tmp_path):
    doc = run_inprocess(_opts(tmp_path / "none", formats=["eager"], batch_sizes=[1]),
                        AgentConfig(node_name="t", state_dir=tmp_path))
    assert [(r.format, r.batch_size) for r in doc.results] == [("eager", 1)]


def test_bench_cli_writes_json_and_spools(built_engines, tmp_path):
    out = tmp_path / "result.json"
    state = tmp_path / "state"
    proc = run_cli("bench", "--engines", str(built_engines), "--models", "mobilenet_v3_small",
                   "--formats", "eager,onnx", "--batch-sizes", "1", "--warmup", "1",
                   "--iterations", "3", "--max-windows", "3", "--json", str(out),
                   env={"INFERFLEET_STATE_DIR": str(state), "INFERFLEET_NODE_NAME": "cli-node"})
    assert proc.returncode == 0, proc.stderr
    assert "mobilenet_v3_small" in proc.stdout and "speedup" in proc.stdout
    doc = ResultDocument.model_validate(json.loads(out.read_text()))
    assert doc.node.node_name == "cli-node" and len(doc.results) == 2
    assert list((state / "spool").glob("*.json")), "the result is spooled for the collector"


def test_bench_cli_batch_above_max_is_one_line(built_engines, tmp_path):
    proc = run_cli("bench", "--engines", str(built_engines), "--models", "squeezenet1_1",
                   "--formats", "onnx", "--batch-sizes", "1,32",
                   env={"INFERFLEET_STATE_DIR": str(tmp_path)})
    assert "batch size 32 is above squeezenet1_1_onnx's max batch 4" in error_line(proc)
