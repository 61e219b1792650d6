"""The PyTorch 2 engine format (``pt2``: torch.export + AOTInductor) on this CPU:
built, verified against eager, cached, run in-process by the benchmark and served by
the real tritonserver (python backend) with the engine's outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli

pytestmark = [pytest.mark.slow]
MODEL = "squeezenet1_1"


@pytest.fixture(scope="module")
def pt2_engines(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pt2") / "engines"
    r = run_cli("build-engines", "--models", MODEL, "--formats", "pt2", "--max-batch", "4", "--engines", str(out),
                timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


@pytest.mark.timeout(900)
def test_pt2_engine_is_built_verified_and_cached(pt2_engines):
    from agent.build.manifest import load_manifest

    rec = load_manifest(pt2_engines).engines[f"{MODEL}_pt2"]
    assert rec.format == "pt2" and rec.device == "cpu" and rec.ok
    assert rec.verification.top1_agreement == 1.0 and rec.verification.max_rel_error < 1e-4
    assert [Path(f).name for f in rec.files] == ["model.pt2"]
    assert (rec.inputs[0].name, rec.outputs[0].name) == ("input", "logits")
    again = run_cli("build-engines", "--models", MODEL, "--formats", "pt2", "--max-batch", "4",
                    "--engines", str(pt2_engines), timeout=300)
    assert again.returncode == 0 and "cached" in again.stdout, again.stdout[-2000:]


@pytest.mark.timeout(600)
def test_pt2_runs_in_process_with_a_dynamic_batch(pt2_engines, tmp_path):
    from agent.build.manifest import load_manifest
    from agent.runners import eager_runner, load_runner
    from agent.build.verify import random_batch

    rec = load_manifest(pt2_engines).engines[f"{MODEL}_pt2"]
    engine, eager = load_runner(rec, pt2_engines), eager_runner(MODEL)
    for batch in (1, 3, 4):
        x = random_batch(batch, (3, 224, 224))
        got = engine.to_numpy(engine.infer(engine.prepare(x)))
        ref = eager.to_numpy(eager.infer(eager.prepare(x)))
        assert got.shape == (batch, 1000)
        assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    r = run_cli("bench", "--models", MODEL, "--engines", str(pt2_engines), "--batch-sizes", "1", "--duration", "0.2",
                "--max-windows", "3", "--warmup", "1", "--json-file", str(tmp_path / "b.json"), timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads((tmp_path / "b.json").read_text())
    by = {x["format"]: x for x in doc["results"]}
    assert set(by) == {"eager", "pt2"} and by["pt2"]["speedup_vs_eager"] > 0 and doc["schema_version"] == "1.2"


@pytest.mark.triton
@pytest.mark.timeout(600)
def test_pt2_is_served_by_triton_with_the_engines_outputs(pt2_engines, tmp_path):
    import tritonclient.http as th

    from agent.build.manifest import load_manifest
    from agent.runners import load_runner
    from agent.triton.server import ServerSettings, start, stop
    from testing.ports import free_port
    from agent.build.verify import random_batch

    engines = tmp_path / "engines"
    shutil.copytree(pt2_engines, engines, ignore=shutil.ignore_patterns("triton-repo"))
    platform = run_cli("repo", "--engines", str(engines), "--repo", str(tmp_path / "platform"), "--backend", "platform")
    assert platform.returncode != 0 and "no Triton platform runs pt2" in platform.stdout + platform.stderr
    r = run_cli("repo", "--engines", str(engines), "--repo", str(tmp_path / "repo"))
    assert r.returncode == 0, r.stderr
    s = ServerSettings(repo=tmp_path / "repo", http_port=free_port(), grpc_port=free_port(),
                       metrics_port=free_port(), state_dir=tmp_path / "state")
    try:
        started = start(s, timeout=240)
        assert not started.report.failed, started.report
        rec = load_manifest(engines).engines[f"{MODEL}_pt2"]
        engine = load_runner(rec, engines)
        client = th.InferenceServerClient(f"127.0.0.1:{s.http_port}")
        x = random_batch(2, (3, 224, 224))
        inp = th.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        served = client.infer(f"{MODEL}_pt2", [inp]).as_numpy("logits")
        ref = engine.to_numpy(engine.infer(engine.prepare(x)))
        assert served.shape == (2, 1000) and np.abs(served - ref).max() <= 1e-5 * np.abs(ref).max()
    finally:
        stop(s, quiet=True)
