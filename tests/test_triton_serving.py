"""A real Triton (the tritonserver bundled in nvidia-pytriton, process runtime) on free
loopback ports, serving engines built by the agent through the python backend:
readiness, a model that fails to load, results equal to the engines, bad requests,
metrics, the served benchmark, reload of a changed model, a corrupted model refused by
the agent's sha256 check before Triton loads it, stop with nothing left."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from agent.errors import AgentError
from agent.triton.client import TritonAPI
from testing.ports import free_port
from conftest import error_line, run_cli

pytestmark = [pytest.mark.triton, pytest.mark.slow, pytest.mark.timeout(600)]

SERVED = ("squeezenet1_1", "mobilenet_v3_small")


def model_config(url: str, model: str) -> dict:
    """The served configuration of ``model`` (through the agent's Triton client)."""
    with TritonAPI(url) as api:
        return api.model_config(model)


def tritonservers() -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            if p.info["name"] == "tritonserver" or "triton_python_backend_stub" in " ".join(p.info["cmdline"] or []):
                out.append(p)
        except psutil.Error:
            pass
    return out


class Node:
    def __init__(self, root: Path, engines: Path) -> None:
        self.root = root
        self.engines = engines
        self.repo = root / "repo"
        self.state = root / "state"
        self.env = {"INFERFLEET_STATE_DIR": str(root / "agent-state")}
        self.ports = [free_port(), free_port(), free_port()]
        self.url = f"127.0.0.1:{self.ports[0]}"

    def agent(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return run_cli(*args, env=self.env, timeout=timeout)

    def serve(self, cmd: str, *args: str) -> subprocess.CompletedProcess:
        return self.agent("serve", cmd, "--state-dir", str(self.state), *args)

    def status(self) -> dict:
        r = self.serve("status", "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def pid(self) -> int | None:
        try:
            return json.loads((self.state / "server.json").read_text())["pid"]
        except OSError:
            return None


@pytest.fixture(scope="module")
def node(built_engines, tmp_path_factory):
    root = tmp_path_factory.mktemp("triton-node")
    engines = root / "engines"
    shutil.copytree(built_engines, engines, ignore=shutil.ignore_patterns("triton-repo"))
    n = Node(root, engines)
    r = n.agent("repo", "--engines", str(engines), "--repo", str(n.repo), "--models", ",".join(SERVED),
                "--formats", "onnx", "--backend", "python")
    assert r.returncode == 0, r.stderr
    # plus one TorchScript model, and a model that cannot load (corrupt engine file)
    r = n.agent("repo", "--engines", str(engines), "--repo", str(n.root / "r2"), "--models", "squeezenet1_1",
                "--formats", "torchscript")
    shutil.move(str(n.root / "r2" / "squeezenet1_1_torchscript"), n.repo / "squeezenet1_1_torchscript")
    bad = n.repo / "broken_onnx"
    shutil.copytree(n.repo / "squeezenet1_1_onnx", bad, copy_function=shutil.copy)
    (bad / "config.pbtxt").write_text((bad / "config.pbtxt").read_text().replace("squeezenet1_1_onnx", "broken_onnx"))
    (bad / "1" / "model.onnx").write_bytes(b"not an onnx file")
    n.start = n.serve("start", "--repo", str(n.repo), "--http-port", str(n.ports[0]), "--grpc-port",
                      str(n.ports[1]), "--metrics-port", str(n.ports[2]), "--timeout", "180")
    yield n
    pid = n.pid()
    n.serve("stop")
    if pid is not None and psutil.pid_exists(pid):  # never leave a server behind
        psutil.Process(pid).kill()
    assert pid is None or not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_start_serves_models_and_names_the_broken_one(node):
    r = node.start
    assert r.returncode == 3, r.stdout + r.stderr
    line = error_line(r)
    assert "1 model(s) failed to load" in line and "broken_onnx" in line and "sha256" in line
    # refused by the agent's own check (the sha256 in inferfleet.json) before Triton was asked
    assert "broken_onnx: refused to load: 1/model.onnx does not match" in line, line
    log = (node.state / "tritonserver.log").read_text()
    assert "loading: squeezenet1_1_onnx:1" in log and "loading: broken_onnx" not in log
    assert "3 model(s) ready" in " ".join(r.stdout.split())
    st = node.status()
    assert st["live"] and st["ready"] and st["version"] == "2.51.0" and st["pid"] == node.pid()
    states = {m["name"]: (m["state"], m["version"]) for m in st["models"]}
    assert states["squeezenet1_1_onnx"] == ("READY", "1")
    assert states["mobilenet_v3_small_onnx"] == ("READY", "1")
    assert states["squeezenet1_1_torchscript"] == ("READY", "1")
    assert states["broken_onnx"][0] == "UNLOADED"  # never sent to Triton
    # a second start from the same state dir is refused, the first keeps serving
    again = node.serve("start", "--repo", str(node.repo), "--http-port", str(free_port()),
                       "--grpc-port", str(free_port()), "--metrics-port", str(free_port()))
    assert "already running" in error_line(again)


def test_served_outputs_equal_the_engines(node):
    import tritonclient.http as th

    from agent.build.manifest import load_manifest
    from agent.runners import load_runner
    from agent.build.verify import random_batch

    manifest = load_manifest(node.engines)
    client = th.InferenceServerClient(node.url)
    try:
        for name in ("squeezenet1_1_onnx", "mobilenet_v3_small_onnx", "squeezenet1_1_torchscript"):
            rec = manifest.engines[name]
            x = random_batch(3, tuple(rec.inputs[0].shape[1:]))
            inp = th.InferInput(rec.inputs[0].name, list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            served = client.infer(name, [inp]).as_numpy(rec.outputs[0].name)
            expected = load_runner(rec, node.engines)(x)
            assert served.shape == expected.shape == (3, 1000)
            scale = np.abs(expected).max()
            assert np.abs(served - expected).max() <= rec.verification.rtol * scale, name
            assert (served.argmax(1) == expected.argmax(1)).all()
    finally:
        client.close()


def test_bad_requests_get_clear_errors(node):
    import tritonclient.http as th
    from tritonclient.utils import InferenceServerException

    client = th.InferenceServerClient(node.url)
    try:
        x = np.zeros((1, 3, 100, 100), np.float32)
        inp = th.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException, match="unexpected shape"):
            client.infer("squeezenet1_1_onnx", [inp])
        x = np.zeros((1, 3, 224, 224), np.int64)
        inp = th.InferInput("input", list(x.shape), "INT64")
        inp.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException, match="data-type is .INT64., but model .squeezenet1_1_onnx. expects .FP32."):
            client.infer("squeezenet1_1_onnx", [inp])
        with pytest.raises(InferenceServerException, match="broken_onnx"):
            client.infer("broken_onnx", [inp])
    finally:
        client.close()


def test_metrics_endpoint(node):
    text = httpx.get(f"http://127.0.0.1:{node.ports[2]}/metrics", timeout=10).text
    assert 'nv_inference_request_success{model="squeezenet1_1_onnx",version="1"}' in text
    assert "nv_inference_request_duration_us" in text


def test_served_benchmark_http_and_grpc(node):
    out = node.root / "bench"
    out.mkdir()
    r = node.agent("bench", "--target", "triton", "--engines", str(node.engines), "--url", node.url,
                   "--models", "squeezenet1_1", "--formats", "onnx", "--batch-sizes", "1",
                   "--concurrency", "1,2", "--duration", "0.5", "--max-windows", "3", "--warmup", "2",
                   "--json-file", str(out / "r.json"), "--csv-file", str(out / "r.csv"),
                   "--metrics-url", f"127.0.0.1:{node.ports[2]}")
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "r.json").read_text())
    assert doc["target"] == "triton" and doc["node"]["triton_version"] == "2.51.0"
    assert [(x["triton_model"], x["concurrency"]) for x in doc["results"]] == [
        ("squeezenet1_1_onnx", 1), ("squeezenet1_1_onnx", 2)]
    for x in doc["results"]:
        assert x["throughput_ips"] > 0 and x["latency_ms"]["p99"] >= x["latency_ms"]["p50"] > 0
        assert x["server"]["request_count"] > 0 and x["server"]["compute_infer_us"] > 0
        # Triton's Prometheus counters read at each used window's edges: the server's count is the
        # client's over the same span (up to the requests in flight at its edges); its split fits in
        # the client's latency
        m = x["server_metrics"]
        assert m["client_requests"] >= x["requests"] > 0
        slack = 2 * x["concurrency"] * x["windows"]  # in flight at each span's two edges
        assert m["client_requests"] - slack <= m["request_success"] <= m["client_requests_max"] + slack, m
        assert m["request_failure"] == 0 and m["cpu_utilization_pct"] is not None
        split = m["queue_us"] + m["compute_input_us"] + m["compute_infer_us"] + m["compute_output_us"]
        assert 0 < split <= m["request_us"] * 1.01 and m["request_us"] <= x["latency_ms"]["mean"] * 1e3
        assert x["telemetry"] is None  # --metrics-url names no local server process
    csv = (out / "r.csv").read_text().splitlines()
    assert csv[0].startswith("Concurrency,Inferences/Second,") and len(csv) == 3
    # the default: the server `agent serve` started (its state file under the agent's state dir)
    (node.root / "agent-state" / "triton").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(node.state / "server.json", node.root / "agent-state" / "triton" / "server.json")
    g = node.agent("bench", "--target", "triton", "--protocol", "grpc", "--engines", str(node.engines),
                   "--url", f"127.0.0.1:{node.ports[1]}", "--models", "mobilenet_v3_small", "--formats", "onnx",
                   "--batch-sizes", "2", "--concurrency", "2", "--iterations", "5", "--max-windows", "3",
                   "--warmup", "1", "--json-file", str(out / "g.json"))
    assert g.returncode == 0, g.stderr
    res = json.loads((out / "g.json").read_text())["results"]
    assert res[0]["protocol"] == "grpc" and res[0]["batch_size"] == 2
    # batch 2: two inferences per request — Triton bumps its two counters apart, so a scrape at a window's
    # edge can catch a request in one and not yet in the other (CI saw 86 inferences for 44 requests)
    m, edge = res[0]["server_metrics"], 2 * res[0]["concurrency"] * res[0]["windows"]
    assert m["request_success"] > 0 and 2 * (m["request_success"] - edge) <= m["inference_count"] \
        <= 2 * (m["request_success"] + edge), m
    t = res[0]["telemetry"]  # tritonserver and its python-backend stubs, found by the pid in the state file
    assert t["source"] == "psutil" and t["cpu_utilization_pct"] > 0 and t["rss_mb"] > 100
    # not reachable / not served
    assert "not reachable" in error_line(node.agent("serve", "status", "--url", f"127.0.0.1:{free_port()}"))
    bad = node.agent("bench", "--target", "triton", "--engines", str(node.engines), "--url",
                     f"127.0.0.1:{free_port()}", "--duration", "0.2")
    assert "Triton" in error_line(bad)
    line = error_line(node.agent("bench", "--target", "triton", "--engines", str(node.engines), "--url",
                                 node.url, "--models", "resnet18", "--duration", "0.2"))
    assert "serves no fp32 engine of resnet18" in line


def test_reload_picks_up_a_changed_model_without_restart(node):
    pid = node.pid()
    r = node.agent("repo", "--engines", str(node.engines), "--repo", str(node.root / "r3"), "--models",
                   "mobilenet_v3_small", "--formats", "onnx", "--instances", "2")
    assert r.returncode == 0, r.stderr
    shutil.rmtree(node.repo / "mobilenet_v3_small_onnx")
    shutil.move(str(node.root / "r3" / "mobilenet_v3_small_onnx"), node.repo / "mobilenet_v3_small_onnx")
    shutil.rmtree(node.repo / "broken_onnx")  # removed from the repository -> nothing to fail
    r = node.serve("reload")
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())
    assert "reloaded: mobilenet_v3_small_onnx;" in out
    assert "unchanged: squeezenet1_1_onnx, squeezenet1_1_torchscript" in out
    cfg = model_config(node.url, "mobilenet_v3_small_onnx")
    assert cfg["instance_group"][0]["count"] == 2
    assert node.pid() == pid and psutil.pid_exists(pid)
    assert {m["name"] for m in node.status()["models"]} == {
        "squeezenet1_1_onnx", "squeezenet1_1_torchscript", "mobilenet_v3_small_onnx"}


def test_reload_refuses_a_corrupted_model_while_the_others_reload(node):
    """Python variant on the real server: a changed model whose engine file no longer
    matches the sha256 `agent repo` recorded is refused by name and never sent to Triton
    (the version loaded before keeps serving); the other changed model reloads. The
    platform variant (no NGC image here) is covered without a server in
    tests/test_triton_repo.py::test_serve_checks_a_platform_model_before_triton_loads_it."""
    from agent.triton.repo import RepoOptions, write_repository

    for name, model, fmt, instances in (("squeezenet1_1_torchscript", "squeezenet1_1", "torchscript", 2),
                                        ("mobilenet_v3_small_onnx", "mobilenet_v3_small", "onnx", 1)):
        staging = node.root / f"staging-{name}"
        write_repository(node.engines, staging, RepoOptions(models=(model,), formats=(fmt,), instances=instances))
        shutil.rmtree(node.repo / name)
        shutil.move(str(staging / name), node.repo / name)
    with open(node.repo / "squeezenet1_1_torchscript" / "1" / "model.pt", "r+b") as f:
        f.seek(256)
        f.write(b"\0" * 16)
    log = node.state / "tritonserver.log"
    loads = log.read_text().count("loading: squeezenet1_1_torchscript:1")
    r = node.serve("reload")
    assert r.returncode == 3, r.stdout + r.stderr
    line = error_line(r)
    assert "squeezenet1_1_torchscript: refused to load: 1/model.pt does not match" in line, line
    assert "1 model(s) failed to load, 2 other(s) serving" in line and "keeps serving" in line
    assert "reloaded: mobilenet_v3_small_onnx;" in " ".join(r.stdout.split())
    assert log.read_text().count("loading: squeezenet1_1_torchscript:1") == loads  # Triton was not asked
    config = model_config(node.url, "squeezenet1_1_torchscript")
    assert config["instance_group"][0]["count"] == 1  # the version loaded before
    config = model_config(node.url, "mobilenet_v3_small_onnx")
    assert config["instance_group"][0]["count"] == 1
    states = {m["name"]: m["state"] for m in node.status()["models"]}
    assert states == {"squeezenet1_1_onnx": "READY", "squeezenet1_1_torchscript": "READY",
                      "mobilenet_v3_small_onnx": "READY"}


def test_zz_stop_leaves_no_process(node):
    pid = node.pid()
    children = [p.pid for p in psutil.Process(pid).children(recursive=True)]
    assert children, "the python backend stubs run as children of tritonserver"
    r = node.serve("stop")
    assert r.returncode == 0, r.stderr
    for p in [pid, *children]:
        assert not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE
    assert not (node.state / "server.json").exists() and not (node.state / "tritonserver.pid").exists()
    assert "no Triton server was started" in error_line(node.serve("stop"))


def test_foreground_for_systemd(node, tmp_path):
    """`serve start --foreground` execs tritonserver (what a systemd unit runs)."""
    repo = tmp_path / "repo"
    shutil.copytree(node.repo / "squeezenet1_1_onnx", repo / "squeezenet1_1_onnx")
    ports = [free_port(), free_port(), free_port()]
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "serve", "start", "--foreground", "--repo", str(repo),
         "--state-dir", str(tmp_path / "state"), "--http-port", str(ports[0]), "--grpc-port", str(ports[1]),
         "--metrics-port", str(ports[2])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **node.env})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with TritonAPI(f"127.0.0.1:{ports[0]}", timeout=2) as api:
                    if api.model_ready("squeezenet1_1_onnx"):
                        break
            except AgentError:
                pass
            assert proc.poll() is None, "foreground server exited"
            time.sleep(0.5)
        else:
            pytest.fail("foreground server not ready in 120 s")
        assert psutil.Process(proc.pid).name() == "tritonserver"  # exec'd, not a child
        assert not (tmp_path / "state" / "server.json").exists()
        url = f"127.0.0.1:{ports[0]}"
        st = run_cli("serve", "status", "--url", url, "--json", "--state-dir", str(tmp_path / "state"))
        assert st.returncode == 0 and json.loads(st.stdout)["models"][0]["state"] == "READY"
        rl = run_cli("serve", "reload", "--url", url, "--repo", str(repo), "--state-dir", str(tmp_path / "state"))
        assert rl.returncode == 0, rl.stderr
        assert "reloaded: squeezenet1_1_onnx" in " ".join(rl.stdout.split())
    finally:
        kids = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        psutil.wait_procs(kids, timeout=10)
    assert proc.returncode is not None
    assert not [p for p in tritonservers() if p.pid == proc.pid]
