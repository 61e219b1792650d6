"""The GPU path (`make test-gpu`, marker ``gpu``): everything here needs a CUDA device
and skips with the reason elsewhere — `make test` stays GPU-free.

On a GPU node: fp16 engines (TorchScript, pt2, ONNX Runtime's CUDA execution
provider, TensorRT where ``tensorrt`` imports) built on CUDA and verified against
eager fp16 at the fp16 tolerance; the in-process benchmark on CUDA (synchronised
per request) recording NVML telemetry beside every result."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli

pytestmark = [pytest.mark.gpu, pytest.mark.slow, pytest.mark.timeout(1800)]
MODEL = "resnet18"


def _cuda() -> str | None:
    """None when a CUDA device is usable, else why not."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a dependency
        return f"torch does not import: {e}"
    if not torch.cuda.is_available():
        return "no CUDA device here (torch.cuda.is_available() is False): run `make test-gpu` on a GPU node"
    return None


@pytest.fixture(scope="module")
def gpu_engines(tmp_path_factory):
    why = _cuda()
    if why:
        pytest.skip(why)
    from agent.exporters import tensorrt_status

    formats = ["torchscript", "onnx", "pt2"] + (["tensorrt"] if tensorrt_status()[0] else [])
    out = tmp_path_factory.mktemp("gpu") / "engines"
    r = run_cli("build-engines", "--models", MODEL, "--formats", ",".join(formats), "--precision", "fp16",
                "--max-batch", "8", "--engines", str(out), timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out, formats


def test_fp16_engines_build_on_cuda_and_pass_the_fp16_tolerance(gpu_engines):
    from agent.build.manifest import load_manifest
    from agent.build.verify import TOLERANCES

    out, formats = gpu_engines
    engines = load_manifest(out).engines
    rtol, min_top1 = TOLERANCES["fp16"]
    for fmt in formats:
        rec = engines[f"{MODEL}_{fmt}_fp16"]
        assert rec.ok and rec.precision == "fp16", (fmt, rec.verification)
        assert rec.verification.max_rel_error <= rtol and rec.verification.top1_agreement >= min_top1
        assert rec.tools.gpu_name and rec.tools.gpu_compute_capability and rec.tools.cuda
        if fmt != "onnx":  # an fp16 ONNX file is portable; the others are compiled for this GPU
            assert rec.device == "cuda"


def test_onnxruntime_cuda_execution_provider_runs_the_onnx_engine(gpu_engines):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDAExecutionProvider here: install the gpu extra (onnxruntime-gpu)")
    from agent.build.manifest import load_manifest
    from agent.runners import eager_runner, load_runner
    from agent.build.verify import verify

    out, _ = gpu_engines
    rec = load_manifest(out).engines[f"{MODEL}_onnx_fp16"]
    runner = load_runner(rec, out, device="cuda")
    assert runner.session.get_providers()[0] == "CUDAExecutionProvider"
    result = verify(runner, eager_runner(MODEL, precision="fp16", device="cuda"), [1, 8], "fp16")
    assert result.passed, result.message


def test_cuda_bench_records_nvml_telemetry(gpu_engines, tmp_path):
    out, formats = gpu_engines
    r = run_cli("bench", "--models", MODEL, "--engines", str(out), "--precision", "fp16", "--batch-sizes", "1,8",
                "--duration", "0.5", "--max-windows", "4", "--json-file", str(tmp_path / "gpu.json"), timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((tmp_path / "gpu.json").read_text())
    assert doc["node"]["gpu_count"] >= 1 and doc["node"]["driver_version"]
    for res in doc["results"]:
        assert res["device"] == "cuda" and res["throughput_ips"] > 0
        assert res["peak_gpu_mem_mb"] is not None
        t = res["telemetry"]
        assert t["source"] == "nvml" and t["samples"] >= 1 and t["gpu_memory_used_mb"] > 0
    assert {x["format"] for x in doc["results"]} >= {"eager", *formats} - {"tensorrt"}
