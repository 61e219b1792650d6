"""build-engines for real: export + verification of 3 small models in both
formats, the manifest contract, the cache (no-op rerun, corruption, changed
option), crash isolation, verification failures, and a SIGKILL mid-build."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agent.build.pipeline import BuildOptions, WorkerPool, failures_error, run_build
from agent.build.manifest import load_manifest
from agent.runners import check_files, eager_runner, load_runner
from agent.build.verify import random_batch
from conftest import BUILT_MAX_BATCH, BUILT_MODELS

pytestmark = pytest.mark.slow


def _no_temporaries(d: Path) -> None:
    assert not [p for p in d.rglob(".tmp-*")], list(d.rglob(".tmp-*"))


def test_manifest_records_every_engine_per_contract(built_engines):
    m = load_manifest(built_engines, missing_ok=False)
    names = {f"{x}_{f}" for x in BUILT_MODELS for f in ("torchscript", "onnx")}
    assert set(m.engines) == names
    for name, rec in m.engines.items():
        assert rec.name == name and rec.ok and rec.precision == "fp32"
        assert rec.max_batch == BUILT_MAX_BATCH and rec.device == "cpu"
        assert check_files(rec, built_engines) is None
        assert rec.verification.batch_sizes == [1, BUILT_MAX_BATCH]
        assert rec.verification.max_rel_error <= rec.verification.rtol
        assert rec.verification.top1_agreement == 1.0
        assert rec.tools.torch and rec.tools.onnx and rec.tools.onnxruntime
        assert rec.size_bytes == sum((built_engines / f).stat().st_size for f in rec.files)
        main = next(iter(rec.files))
        assert main.startswith(f"{rec.model}/{rec.format}_fp32/")
        if rec.format == "onnx":
            assert rec.opset == 17
            assert [t.name for t in rec.inputs] == ["input"] and [t.name for t in rec.outputs] == ["logits"]
        else:
            assert [t.name for t in rec.inputs] == ["INPUT__0"] and [t.name for t in rec.outputs] == ["OUTPUT__0"]
        assert rec.inputs[0].shape == [-1, 3, 224, 224] and rec.outputs[0].shape == [-1, 1000]
    _no_temporaries(built_engines)


def test_engines_run_and_match_eager_at_any_batch_up_to_max(built_engines):
    m = load_manifest(built_engines)
    eager = eager_runner("squeezenet1_1")
    x = random_batch(3, (3, 224, 224), seed=99)
    ref = eager(x)
    for fmt in ("torchscript", "onnx"):
        out = load_runner(m.engines[f"squeezenet1_1_{fmt}"], built_engines)(x)
        assert out.shape == (3, 1000)
        assert np.abs(out - ref).max() / np.abs(ref).max() < 1e-3
        assert (out.argmax(1) == ref.argmax(1)).all()


def test_rerun_is_a_noop(built_engines, tmp_path):
    out = tmp_path / "engines"
    shutil.copytree(built_engines, out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    outcomes = run_build(BuildOptions(models=list(BUILT_MODELS), out=out, max_batch=BUILT_MAX_BATCH),
                         show=False)
    assert {o.status for o in outcomes} == {"cached"} and len(outcomes) == 6
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".build.lock"}
    assert after == {p: t for p, t in before.items() if p.name != ".build.lock"}


def test_corruption_and_changed_options_rebuild_only_what_is_affected(built_engines, tmp_path):
    out = tmp_path / "engines"
    shutil.copytree(built_engines, out)
    onnx_file = out / "squeezenet1_1" / "onnx_fp32" / "model.onnx"
    data = onnx_file.read_bytes()
    onnx_file.write_bytes(data[: len(data) // 2])  # truncated, same name
    outcomes = run_build(BuildOptions(models=["squeezenet1_1", "mobilenet_v3_small"], out=out,
                                      max_batch=BUILT_MAX_BATCH), show=False)
    status = {o.name: o.status for o in outcomes}
    assert status == {"squeezenet1_1_torchscript": "cached", "squeezenet1_1_onnx": "built",
                      "mobilenet_v3_small_torchscript": "cached", "mobilenet_v3_small_onnx": "cached"}
    m = load_manifest(out)
    assert check_files(m.engines["squeezenet1_1_onnx"], out) is None
    assert "resnet18_onnx" in m.engines  # engines not asked for are kept

    # a changed option (max batch) rebuilds that format only
    outcomes = run_build(BuildOptions(models=["squeezenet1_1"], formats=["torchscript"], out=out,
                                      max_batch=2), show=False)
    assert [(o.name, o.status) for o in outcomes] == [("squeezenet1_1_torchscript", "built")]
    m = load_manifest(out)
    assert m.engines["squeezenet1_1_torchscript"].max_batch == 2
    assert m.engines["squeezenet1_1_onnx"].max_batch == BUILT_MAX_BATCH
    _no_temporaries(out)


WRAPPER = """
import os, signal, sys
import agent.build.worker as worker
import agent.build.verify
build_model, tolerances = worker.build_model, dict(agent.build.verify.TOLERANCES)

def patched(job):
    print("worker", os.getpid(), "builds", job.model, file=sys.stderr)
    if job.model == os.environ["CRASH_MODEL"]:
        os.kill(os.getpid(), signal.SIGSEGV)
    agent.build.verify.TOLERANCES.update(tolerances)
    if job.model == os.environ.get("STRICT_MODEL"):
        agent.build.verify.TOLERANCES["fp32"] = (-1.0, 1.0)   # nothing can pass
    build_model(job)

worker.build_model = patched
sys.exit(worker.main())
"""


def test_worker_crash_and_failed_verification_are_isolated_and_reported(tmp_path, monkeypatch):
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(WRAPPER)
    monkeypatch.setenv("CRASH_MODEL", "shufflenet_v2_x0_5")
    monkeypatch.setenv("STRICT_MODEL", "mobilenet_v3_small")
    monkeypatch.setattr("agent.build.pipeline._worker_cmd", lambda: [sys.executable, str(wrapper)])
    out = tmp_path / "engines"
    starts = []
    real_ensure = WorkerPool._ensure

    def counting_ensure(self):  # noqa: ANN001, ANN202
        proc = real_ensure(self)
        starts.append(proc.pid)
        return proc

    monkeypatch.setattr(WorkerPool, "_ensure", counting_ensure)
    outcomes = run_build(BuildOptions(models=["mobilenet_v3_small", "squeezenet1_1", "shufflenet_v2_x0_5",
                                              "mnasnet0_5"],
                                      formats=["onnx"], out=out, max_batch=2), show=False)
    # one worker for the first three models (the third crashes it), a fresh one for the last
    assert len(starts) == 4 and len(set(starts)) == 2 and starts[2] != starts[3], starts
    status = {o.name: o for o in outcomes}
    assert status["mnasnet0_5_onnx"].status == "built"
    assert status["squeezenet1_1_onnx"].status == "built"
    crashed = status["shufflenet_v2_x0_5_onnx"]
    assert crashed.status == "failed" and "signal 11" in crashed.message
    strict = status["mobilenet_v3_small_onnx"]
    assert strict.status == "failed" and "verification" in strict.message
    m = load_manifest(out)
    assert m.engines["squeezenet1_1_onnx"].ok
    assert not m.engines["mobilenet_v3_small_onnx"].ok  # recorded as failed: never served
    assert "shufflenet_v2_x0_5_onnx" not in m.engines
    err = failures_error(outcomes)
    assert err is not None and err.code == 1
    assert "shufflenet_v2_x0_5_onnx" in str(err) and "mobilenet_v3_small_onnx" in str(err)
    assert "squeezenet1_1_onnx" not in str(err)
    _no_temporaries(out)


def test_sigkill_mid_build_leaves_nothing_that_looks_good(tmp_path):
    out = tmp_path / "engines"
    cmd = [sys.executable, "-m", "agent", "build-engines", "--models",
           "squeezenet1_1,shufflenet_v2_x0_5", "--engines", str(out), "--max-batch", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 180
    try:
        # kill while the second engine is being written (a temporary exists, one record exists)
        while time.monotonic() < deadline and proc.poll() is None:
            m = load_manifest(out) if (out / "manifest.json").exists() else None
            if m and m.engines and list(out.glob("*/.tmp-*")):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the build finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert list(out.rglob(".tmp-*")), "expected a half-written temporary at the kill"
    m = load_manifest(out)  # parses: written atomically
    for rec in m.engines.values():  # whatever the manifest says is good, is good
        assert check_files(rec, out) is None
    outcomes = run_build(BuildOptions(models=["squeezenet1_1", "shufflenet_v2_x0_5"], out=out,
                                      max_batch=2), show=False)
    assert failures_error(outcomes) is None
    assert {o.status for o in outcomes} <= {"built", "cached"}
    assert "cached" in {o.status for o in outcomes}  # what finished before the kill is reused
    m = load_manifest(out)
    assert len(m.engines) == 4 and all(check_files(r, out) is None for r in m.engines.values())
    _no_temporaries(out)


def test_build_key_changes_with_every_input_that_shapes_the_artifact():
    from agent.build.manifest import build_key
    from agent.schema import ToolVersions

    base = dict(model="resnet18", fmt="onnx", precision="fp32", max_batch=8, opset=17,
                onnx_exporter="legacy", workspace_mb=2048, pretrained=False, seed=1,
                exporter_version="1", tools=ToolVersions(torch="2.14.1", onnx="1.23.2"))
    k = build_key(**base)
    assert k == build_key(**base)
    for change in ({"max_batch": 16}, {"opset": 18}, {"precision": "fp16"}, {"pretrained": True},
                   {"onnx_exporter": "dynamo"}, {"exporter_version": "2"},
                   {"tools": ToolVersions(torch="2.15.0", onnx="1.23.2")},
                   {"tools": ToolVersions(torch="2.14.1", onnx="1.24.0")}):
        assert build_key(**{**base, **change}) != k, change
    # the TensorRT workspace does not change an ONNX file
    assert build_key(**{**base, "workspace_mb": 1024}) == k


def test_tensorrt_engine_builds_verifies_and_reuses_the_timing_cache(tmp_path):
    from agent.exporters import tensorrt_status

    ok, why = tensorrt_status()
    if not ok:
        pytest.skip(f"TensorRT build not run on this node: {why}")
    out = tmp_path / "engines"
    opts = dict(models=["squeezenet1_1"], formats=["tensorrt"], out=out, max_batch=4)
    outcomes = run_build(BuildOptions(**opts), show=False)
    assert failures_error(outcomes) is None
    rec = load_manifest(out).engines["squeezenet1_1_tensorrt"]
    assert rec.ok and rec.device == "cuda" and rec.tools.tensorrt and rec.tools.gpu_compute_capability
    assert next(iter(rec.files)).endswith("model.plan")
    assert (out / ".cache" / "tensorrt-timing.cache").stat().st_size > 0
    x = random_batch(3, (3, 224, 224), seed=5)
    ref = eager_runner("squeezenet1_1", device="cuda")(x)
    got = load_runner(rec, out)(x)
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-3
    assert [o.status for o in run_build(BuildOptions(**opts), show=False)] == ["cached"]


def test_dynamo_exporter_writes_external_weights_and_verifies(tmp_path):
    out = tmp_path / "engines"
    outcomes = run_build(BuildOptions(models=["squeezenet1_1"], formats=["onnx"], out=out, max_batch=2,
                                      onnx_exporter="dynamo"), show=False)
    assert failures_error(outcomes) is None
    rec = load_manifest(out).engines["squeezenet1_1_onnx"]
    assert set(rec.files) == {"squeezenet1_1/onnx_fp32/model.onnx",
                              "squeezenet1_1/onnx_fp32/model.onnx.data"}
    assert rec.opset and rec.opset >= 17 and rec.ok
    (out / "squeezenet1_1/onnx_fp32/model.onnx.data").write_bytes(b"\0" * 10)  # corrupt the weights
    outcomes = run_build(BuildOptions(models=["squeezenet1_1"], formats=["onnx"], out=out, max_batch=2,
                                      onnx_exporter="dynamo"), show=False)
    assert [o.status for o in outcomes] == ["built"]
