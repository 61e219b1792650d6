"""Triton model repository writer, server command lines and the perf_analyzer CSV —
no server started here (tests/test_triton_serving.py runs a real one)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import sysconfig
from pathlib import Path

import pytest

from agent.errors import AgentError
from agent.build.manifest import load_manifest, save_manifest
from agent.triton import server
from agent.triton.repo import RepoOptions, render_config, write_repository
from testing.ports import free_port


@pytest.fixture
def engines(built_engines, tmp_path) -> Path:
    dest = tmp_path / "engines"
    shutil.copytree(built_engines, dest, ignore=shutil.ignore_patterns("triton-repo"))
    return dest


def test_python_repository_layout(engines, tmp_path):
    repo = tmp_path / "repo"
    report = write_repository(engines, repo, RepoOptions(models=("squeezenet1_1", "resnet18")))
    assert report.written == ["resnet18_onnx", "resnet18_torchscript", "squeezenet1_1_onnx",
                              "squeezenet1_1_torchscript"]
    assert not report.skipped
    cfg = (repo / "squeezenet1_1_onnx" / "config.pbtxt").read_text()
    assert 'backend: "python"' in cfg and "platform" not in cfg
    assert 'name: "squeezenet1_1_onnx"' in cfg
    assert "max_batch_size: 4" in cfg
    assert 'name: "input"' in cfg and 'name: "logits"' in cfg
    assert "dims: [ 3, 224, 224 ]" in cfg and "dims: [ 1000 ]" in cfg
    assert "preferred_batch_size: [ 4 ]" in cfg and "max_queue_delay_microseconds: 100" in cfg
    assert "kind: KIND_CPU" in cfg
    version = repo / "squeezenet1_1_onnx" / "1"
    assert {p.name for p in version.iterdir()} >= {"model.py", "engine.json", "model.onnx"}
    ts_cfg = (repo / "squeezenet1_1_torchscript" / "config.pbtxt").read_text()
    assert 'name: "INPUT__0"' in ts_cfg and 'name: "OUTPUT__0"' in ts_cfg
    # the python model loads the same file through agent.runners (hash-checked)
    from agent.runners import load_runner
    from agent.schema import EngineRecord

    rec = EngineRecord.model_validate_json((version / "engine.json").read_text())
    assert load_runner(rec, version)  # files and sha256 match the version directory


def test_repository_is_idempotent_and_mirrors_selection(engines, tmp_path):
    repo = tmp_path / "repo"
    write_repository(engines, repo, RepoOptions(models=("squeezenet1_1",)))
    mtime = (repo / "squeezenet1_1_onnx" / "config.pbtxt").stat().st_mtime_ns
    again = write_repository(engines, repo, RepoOptions(models=("squeezenet1_1",)))
    assert again.written == [] and again.unchanged == ["squeezenet1_1_onnx", "squeezenet1_1_torchscript"]
    assert (repo / "squeezenet1_1_onnx" / "config.pbtxt").stat().st_mtime_ns == mtime
    (repo / "someone-elses-model").mkdir()
    (repo / "someone-elses-model" / "config.pbtxt").write_text('name: "x"\n')
    changed = write_repository(engines, repo, RepoOptions(models=("squeezenet1_1",), formats=("onnx",),
                                                          instances=2))
    assert changed.written == ["squeezenet1_1_onnx"] and changed.removed == ["squeezenet1_1_torchscript"]
    assert "count: 2" in (repo / "squeezenet1_1_onnx" / "config.pbtxt").read_text()
    assert (repo / "someone-elses-model").is_dir()  # not ours: left alone
    assert not list(repo.glob(".tmp-*"))


def test_only_verified_engines_enter(engines, tmp_path):
    manifest = load_manifest(engines)
    rec = manifest.engines["squeezenet1_1_onnx"]
    manifest.engines["squeezenet1_1_onnx"] = rec.model_copy(
        update={"verification": rec.verification.model_copy(update={"passed": False, "message": "too far"})})
    save_manifest(engines, manifest)
    report = write_repository(engines, tmp_path / "repo", RepoOptions(models=("squeezenet1_1",)))
    assert "squeezenet1_1_onnx" in report.skipped and "too far" in report.skipped["squeezenet1_1_onnx"]
    assert report.models == ["squeezenet1_1_torchscript"]
    assert not (tmp_path / "repo" / "squeezenet1_1_onnx").exists()


def test_platform_variant_configs(engines, tmp_path):
    repo = tmp_path / "repo"
    write_repository(engines, repo, RepoOptions(backend="platform", models=("resnet18",), queue_delay_us=500,
                                                instances=2))
    onnx = (repo / "resnet18_onnx" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in onnx and 'default_model_filename: "model.onnx"' in onnx
    assert "kind: KIND_GPU" in onnx and "count: 2" in onnx and "max_queue_delay_microseconds: 500" in onnx
    assert "backend:" not in onnx
    assert (repo / "resnet18_onnx" / "1" / "model.onnx").is_file()
    assert not (repo / "resnet18_onnx" / "1" / "model.py").exists()
    ts = (repo / "resnet18_torchscript" / "config.pbtxt").read_text()
    assert 'platform: "pytorch_libtorch"' in ts and 'default_model_filename: "model.pt"' in ts
    # a TensorRT engine (built on GPU nodes only): same contract, tensorrt_plan platform
    rec = load_manifest(engines).engines["resnet18_onnx"]
    trt = rec.model_copy(update={"format": "tensorrt", "precision": "fp16", "device": "cuda",
                                 "files": {"resnet18/tensorrt_fp16/model.plan": "0" * 64}})
    cfg = render_config(trt, RepoOptions(backend="platform"))
    assert 'name: "resnet18_tensorrt_fp16"' in cfg and 'platform: "tensorrt_plan"' in cfg
    assert 'default_model_filename: "model.plan"' in cfg and "kind: KIND_GPU" in cfg
    with pytest.raises(AgentError, match="GPU only"):
        render_config(trt, RepoOptions(backend="python"))


def test_repo_cli_errors(cli, engines, tmp_path):
    from conftest import error_line

    assert "no manifest.json" in error_line(cli("repo", "--engines", str(tmp_path / "nope"),
                                                "--repo", str(tmp_path / "r")))
    assert "unknown --backend" in error_line(cli("repo", "--engines", str(engines), "--repo",
                                                 str(tmp_path / "r"), "--backend", "tensorflow"))
    assert "no engines for model(s) vgg11" in error_line(cli("repo", "--engines", str(engines),
                                                             "--models", "vgg11"))
    ok = cli("repo", "--engines", str(engines), "--repo", str(tmp_path / "r"), "--models", "squeezenet1_1")
    assert ok.returncode == 0, ok.stderr
    assert "written" in ok.stdout and (tmp_path / "r" / "squeezenet1_1_onnx" / "config.pbtxt").is_file()


# ------------------------------------------- artifacts (issue #11, "Reliability and security")
def _corrupt(path: Path) -> None:
    """Flip 16 bytes in place: the same inode, as bit rot or a stray write would (and what
    a hard link would carry into the repository)."""
    with open(path, "r+b") as f:
        f.seek(256)
        chunk = f.read(16)
        f.seek(256)
        f.write(bytes(b ^ 0xFF for b in chunk))


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every path below root with its inode, mtime and content hash."""
    from agent.fsutil import sha256_file

    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns, sha256_file(p) if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def _onnx_file(engines: Path, name: str) -> str:
    rec = load_manifest(engines).engines[name]
    return next(rel for rel in rec.files if rel.endswith("model.onnx"))


def test_repo_refuses_a_corrupt_engine_and_changes_nothing(cli, engines, tmp_path):
    """Every file of every selected engine is checked against its manifest sha256 BEFORE
    anything is written, for both backends: one mismatch refuses the whole write (one-line
    error naming engine and file, non-zero exit) and no model changes, not even those whose
    files are fine (here: a new --instances would have rewritten squeezenet1_1_torchscript)."""
    from conftest import error_line

    repos = {b: tmp_path / f"repo-{b}" for b in ("python", "platform")}
    for backend, repo in repos.items():
        write_repository(engines, repo, RepoOptions(backend=backend, models=("squeezenet1_1",)))
    before = {b: _snapshot(r) for b, r in repos.items()}
    rel = _onnx_file(engines, "squeezenet1_1_onnx")
    _corrupt(engines / rel)

    line = error_line(cli("repo", "--engines", str(engines), "--repo", str(repos["python"]),
                          "--models", "squeezenet1_1", "--instances", "2"))
    assert "engine squeezenet1_1_onnx" in line and rel in line and "sha256" in line, line
    assert "squeezenet1_1_torchscript" not in line  # only the bad engine is named
    with pytest.raises(AgentError, match=f"engine squeezenet1_1_onnx: {rel} does not match"):
        write_repository(engines, repos["platform"], RepoOptions(backend="platform", models=("squeezenet1_1",),
                                                               instances=2))
    assert {b: _snapshot(r) for b, r in repos.items()} == before  # untouched, no .tmp-* left
    fresh = tmp_path / "fresh"
    assert "squeezenet1_1_onnx" in error_line(cli("repo", "--engines", str(engines), "--repo", str(fresh)))
    assert not fresh.exists()


def test_build_engines_repository_step_refuses_a_corrupt_engine(cli, engines):
    """The repository step of `agent build-engines` covers every engine of the manifest, also
    those this run did not (re)build: a corrupt one refuses the repository (the build of
    squeezenet1_1 itself is a cache hit here)."""
    from conftest import BUILT_MAX_BATCH, error_line

    rel = _onnx_file(engines, "resnet18_onnx")
    _corrupt(engines / rel)
    r = cli("build-engines", "--models", "squeezenet1_1", "--formats", "torchscript,onnx", "--max-batch",
            str(BUILT_MAX_BATCH), "--engines", str(engines), "--triton-backend", "python")
    line = error_line(r)
    assert "cached" in r.stdout, r.stdout  # nothing was rebuilt
    assert "engine resnet18_onnx" in line and rel in line and "sha256" in line, line
    assert not (engines / "triton-repo").exists()


def test_repository_holds_copies_not_hard_links(engines, built_engines, tmp_path):
    """Engine files enter the repository as reflinks or copies: corrupting the build
    directory's file afterwards leaves the served copy intact (both backends)."""
    from agent.fsutil import sha256_file

    rel = _onnx_file(engines, "squeezenet1_1_onnx")
    digest = load_manifest(engines).engines["squeezenet1_1_onnx"].files[rel]
    repos = {b: tmp_path / f"repo-{b}" for b in ("python", "platform")}
    for backend, repo in repos.items():
        write_repository(engines, repo, RepoOptions(backend=backend, models=("squeezenet1_1",), formats=("onnx",)))
    src = engines / rel
    copies = [r / "squeezenet1_1_onnx" / "1" / "model.onnx" for r in repos.values()]
    for dst in copies:
        assert dst.stat().st_nlink == 1 and dst.stat().st_ino != src.stat().st_ino
    assert src.stat().st_nlink == 1
    _corrupt(src)
    assert sha256_file(src) != digest
    for repo, dst in zip(repos.values(), copies):
        assert sha256_file(dst) == digest
        assert server.check_model_files(repo / "squeezenet1_1_onnx") is None
    # a repository copy that no longer matches is not "unchanged": the next write repairs it
    shutil.copyfile(built_engines / rel, src)
    _corrupt(copies[0])
    again = write_repository(engines, repos["python"], RepoOptions(models=("squeezenet1_1",), formats=("onnx",)))
    assert again.written == ["squeezenet1_1_onnx"] and sha256_file(copies[0]) == digest


class RecordingAPI:
    """A stand-in for TritonAPI that records what it is asked to load."""

    def __init__(self, models: list[str]) -> None:
        self.models = models
        self.loads: list[str] = []

    def index(self) -> list[dict]:
        return [{"name": m} for m in self.models]

    def load(self, name: str) -> None:
        self.loads.append(name)

    def model_ready(self, name: str) -> bool:
        return name in self.loads

    def unload(self, name: str) -> None:
        return None


def test_serve_checks_a_platform_model_before_triton_loads_it(engines, tmp_path, monkeypatch):
    """NATIVE variant, checked WITHOUT a server: the NGC image (onnxruntime_onnx /
    pytorch_libtorch / tensorrt_plan backends) is not available here, so this test runs
    the check (server.check_model_files) on a platform repository and server.sync_models
    (what `agent serve start` and `agent serve reload` run) against a recording stand-in
    for Triton's API; the python variant runs on a real tritonserver in
    tests/test_triton_serving.py. Triton's native platforms load the file without any
    check: a model whose file no longer matches the sha256 recorded by `agent repo` must
    never be sent to Triton, and must be named, while the others load."""
    repo = tmp_path / "repo"
    write_repository(engines, repo, RepoOptions(backend="platform", models=("squeezenet1_1",)))
    assert server.check_model_files(repo / "squeezenet1_1_onnx") is None
    assert server.check_model_files(repo / "squeezenet1_1_torchscript") is None
    _corrupt(repo / "squeezenet1_1_onnx" / "1" / "model.onnx")
    problem = server.check_model_files(repo / "squeezenet1_1_onnx")
    assert problem and "1/model.onnx does not match" in problem and "sha256" in problem

    for force in (False, True):  # start (nothing loaded yet) and `reload --force`
        api = RecordingAPI(server.repo_models(repo))
        report = server.sync_models(api, repo, tmp_path / "state", force=force)
        assert api.loads == ["squeezenet1_1_torchscript"]  # the corrupted model never reached Triton
        assert report.loaded == ["squeezenet1_1_torchscript"]
        assert list(report.failed) == ["squeezenet1_1_onnx"] and "refused to load" in report.failed["squeezenet1_1_onnx"]
        err = str(report.error())
        assert "squeezenet1_1_onnx: refused to load: 1/model.onnx does not match" in err and "1 other(s) serving" in err

    # `serve start --foreground` (systemd): only matching models get --load-model
    def execvpe(file, cmd, env):
        raise SystemExit(cmd)

    monkeypatch.setattr(server.os, "execvpe", execvpe)
    s = server.ServerSettings(repo=repo, state_dir=tmp_path / "fg", http_port=free_port(),
                              grpc_port=free_port(), metrics_port=free_port())
    with pytest.raises(SystemExit) as exc:
        server.exec_foreground(s)
    loads = [a for a in exc.value.code if a.startswith("--load-model")]
    assert loads == ["--load-model=squeezenet1_1_torchscript"]


# ------------------------------------------------------------------- server
def test_container_command_line(tmp_path):
    s = server.ServerSettings(repo=tmp_path, runtime="container", bind="127.0.0.1", http_port=9000,
                              grpc_port=9001, metrics_port=9002, container_name="tn")
    repo = str(tmp_path.resolve())
    flags = ["tritonserver", "--model-repository=/models", "--model-control-mode=explicit",
             "--exit-on-error=true", "--strict-readiness=false", "--http-port=9000", "--grpc-port=9001",
             "--metrics-port=9002", "--allow-metrics=true", "--allow-cpu-metrics=true",
             "--metrics-config=summary_latencies=true", "--exit-timeout-secs=5", "--log-verbose=0"]
    assert server.container_command(s, "docker") == [
        "docker", "run", "-d", "--name", "tn", "--gpus", "all", "--shm-size=1g", "--ulimit", "memlock=-1",
        "--ulimit", "stack=67108864", "-p", "127.0.0.1:9000:9000", "-p", "127.0.0.1:9001:9001",
        "-p", "127.0.0.1:9002:9002", "-v", f"{repo}:/models:ro", "nvcr.io/nvidia/tritonserver:24.10-py3",
        *flags]
    podman = server.container_command(s, "podman", detach=False)
    assert podman[:4] == ["podman", "run", "--rm", "--name"]
    assert podman[5:7] == ["--device", "nvidia.com/gpu=all"] and "--gpus" not in podman


def test_process_command_and_environment(tmp_path):
    s = server.ServerSettings(repo=tmp_path, http_port=9100, grpc_port=9101, metrics_port=9102,
                              state_dir=tmp_path / "state")
    cmd, env = server.process_command(s)
    b = server.bundled()
    assert cmd[0] == str(b.binary)
    for flag in ("--model-control-mode=explicit", "--exit-on-error=true", "--http-address=127.0.0.1",
                 "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1", "--http-port=9100",
                 f"--backend-directory={tmp_path / 'state' / 'backends'}"):
        assert flag in cmd
    assert not any(a.startswith("--load-model") for a in cmd)  # models are loaded through the API
    py = tmp_path / "state" / "backends" / "python"
    assert {p.name for p in py.iterdir()} == {"libtriton_python.so", "triton_python_backend_utils.py",
                                               "triton_python_backend_stub"}
    libs = env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert libs[:2] == [str(b.libs), sysconfig.get_config_var("LIBDIR")]  # trap 1
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)  # trap 2
    import numpy

    assert int(numpy.__version__.split(".")[0]) < 2  # trap 3


def test_start_refuses_bad_input(tmp_path):
    with pytest.raises(AgentError, match="does not exist"):
        server.start(server.ServerSettings(repo=tmp_path / "nope", state_dir=tmp_path / "s"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(AgentError, match="not a Triton model repository"):
        server.start(server.ServerSettings(repo=tmp_path / "empty", state_dir=tmp_path / "s"))
    repo = tmp_path / "repo"
    (repo / "m").mkdir(parents=True)
    (repo / "m" / "config.pbtxt").write_text('name: "m"\n')
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        s = server.ServerSettings(repo=repo, state_dir=tmp_path / "s", http_port=port,
                                  grpc_port=free_port(), metrics_port=free_port())
        with pytest.raises(AgentError, match=f"port {port} \\(--http-port\\) on 127.0.0.1 is already in use"):
            server.start(s)
    assert not (tmp_path / "s" / "server.json").exists()
    with pytest.raises(AgentError, match="every port must differ"):
        server.start(server.ServerSettings(repo=repo, state_dir=tmp_path / "s", http_port=9300,
                                           grpc_port=9300, metrics_port=9302))


def test_stop_only_touches_its_own_process(tmp_path):
    import subprocess

    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        s = server.ServerSettings(repo=tmp_path, state_dir=tmp_path)
        import psutil

        (tmp_path / "server.json").write_text(json.dumps(
            {"runtime": "native", "pid": sleeper.pid, "create_time": psutil.Process(sleeper.pid).create_time()}))
        with pytest.raises(AgentError, match="was not running"):
            server.stop(s)  # the pid is not a tritonserver: not signalled
        assert sleeper.poll() is None
        assert not (tmp_path / "server.json").exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_perf_analyzer_csv_columns():
    from agent.bench.csvout import COLUMNS, perf_analyzer_csv
    from agent.schema import BenchResult, BenchSettings, LatencyStats, NodeFacts, ResultDocument, ServerBreakdown

    lat = LatencyStats(p50=10, p90=12, p95=13, p99=20, mean=11, min=9, max=21, std=1)
    doc = ResultDocument(
        target="triton", node=NodeFacts(node_name="n", hostname="h"),
        settings=BenchSettings(warmup=1, window_seconds=1, stability_pct=10, max_windows=3),
        results=[BenchResult(model="m", format="onnx", batch_size=1, concurrency=c, triton_model="m_onnx",
                             latency_ms=lat, throughput_ips=100.0 * c, requests=10, windows=3, stable=True,
                             server=ServerBreakdown(queue_us=1000, compute_input_us=100, compute_infer_us=8000,
                                                    compute_output_us=100, request_count=10))
                 for c in (2, 1)])
    lines = perf_analyzer_csv(doc).splitlines()
    assert lines[0] == ("Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,"
                        "Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,"
                        "p50 latency,p90 latency,p95 latency,p99 latency")
    assert lines[0].split(",") == COLUMNS
    assert lines[1] == "1,100.00,0,1800,1000,100,8000,100,0,10000,12000,13000,20000"  # microseconds
    assert lines[2].startswith("2,200.00,")
