"""The whole fleet, end to end, on this machine: containers stand in for the cloud.

1. the collector starts on the controller (SQLite) with a token;
2. two node containers (the project's node image: Debian 12, systemd as PID 1)
   come up on a Podman network, and the inventory is written by the SAME
   renderer `make provision` uses (`agent.infra.inventory`), from an output
   document shaped like the Terraform modules' `nodes` output;
3. `site.yml` converges them (CPU path: the GPU steps skip, Triton in process
   mode on distinct ports), then `bench.yml` builds, serves, benchmarks and
   pushes two small models, plus one short MLPerf offline scenario (LoadGen);
4. each node's Triton served the agent-built engines, the collector holds each
   node's results exactly once (the scenario in its scenario columns, its LoadGen
   logs on the node), and `agent fleet report` lists every node,
   backend and model with the numbers that were pushed;
5. `site.yml` again changes nothing; one pinned version bumped: only that
   package moves, and after a new bench the report shows that node's
   before/after comparison.

Everything it starts (containers, network, servers, temp files) is removed
afterwards, also when a step fails. Stage timings land in
``out/e2e/timings.json``. Each stage has its own time limit (STAGE_LIMITS),
generous enough for a 2-core machine busy with other work; a stage that
overruns fails naming itself. pytest-timeout is only a backstop here (the sum
of the stage limits): the module fixtures run several stages in one test's
setup. NVIDIA's repositories are replaced by the signed
local fixture repository (tests/fixtures/aptrepo); GPU behaviour is verified on
real nodes only."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from testing.ports import free_port

from node_support import (
    NODE_CA_BUNDLE,
    ROOT,
    VENV_BIN,
    BoundedStage,
    build_agent_wheel,
    changed_tasks,
    host_ca_bundle,
    local_pip_sources,
    node_image,
    podman,
    remote_runs,
    run_playbook,
    start_node,
)

# Per-stage limits in seconds. A quiet 2-core machine needs (README): image+wheel
# 2 s (cached; a fresh debootstrap ~90 s), nodes up 3 s, site.yml fresh ~320 s,
# bench.yml ~140 s, rerun <60 s, one-pin upgrade ~140 s, bench after it ~40 s;
# the limits leave room for a machine several times slower.
STAGE_LIMITS = {
    "image+wheel+aptrepo": 1200,
    "network": 120,
    "nodes up": 600,
    "collector": 300,
    "inventory": 60,
    "site.yml (fresh)": 2400,
    "bench.yml": 1800,
    "push again": 600,
    "report": 600,
    "tune.yml": 1500,
    "site.yml (rerun)": 900,
    "site.yml (upgrade one pin)": 1800,
    "bench.yml (after upgrade)": 1200,
    "report (after upgrade)": 600,
}
# a backstop only: every stage stops at its own limit first
E2E_TIMEOUT = sum(STAGE_LIMITS.values()) + 600

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.ansible, pytest.mark.triton,
              pytest.mark.timeout(E2E_TIMEOUT)]

MODELS = ["squeezenet1_1", "mobilenet_v3_small"]
SCENARIO = "offline"
NODES = {"node-1": 8000, "node-2": 8100}  # name -> Triton HTTP port (gRPC +1, metrics +2)
PRICES = {"node-1": 0.55, "node-2": 1.10}
TOKEN = "e2e-" + uuid.uuid4().hex
UPGRADED_PIN = ("inferfleet_stack_cudnn_version", "9.6.0.74")  # 24.10 ships 9.5.0.50
UPGRADED_PACKAGES = {"libcudnn9-cuda-12", "libcudnn9-dev-cuda-12"}
TIMINGS: dict[str, float] = {}
# Module runs a site.yml rerun may send to a converged node. Each is a round trip
# (a few podman execs here, an SSH exchange on a real node): 88 before the rerun
# was made cheap (apt 10 times, facts twice, one run per file and directory),
# 32 after (P7 in issue #11).
RERUN_MAX_REMOTE_RUNS = 40


class Stage(BoundedStage):
    """A bounded stage (node_support.BoundedStage) whose time lands in out/e2e/timings.json."""

    def __init__(self, name: str) -> None:
        super().__init__(name, STAGE_LIMITS[name])

    def __exit__(self, exc_type, exc, tb) -> None:
        TIMINGS[self.name] = round(self.elapsed(), 1)
        out = ROOT / "out" / "e2e"
        out.mkdir(parents=True, exist_ok=True)
        (out / "timings.json").write_text(json.dumps(TIMINGS, indent=2) + "\n")
        super().__exit__(exc_type, exc, tb)


def _auth() -> dict[str, str]:
    """The collector token on every request: the collector will require it for reads too."""
    return {"Authorization": f"Bearer {TOKEN}"}


def _report_env() -> dict[str, str]:
    """`agent fleet report --collector` reads INFERFLEET_COLLECTOR_READ_TOKEN, else
    INFERFLEET_COLLECTOR_TOKEN: give it the collector's token, and no other."""
    env = {k: v for k, v in os.environ.items() if k != "INFERFLEET_COLLECTOR_READ_TOKEN"}
    return {**env, "INFERFLEET_COLLECTOR_TOKEN": TOKEN}


def _wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2, headers=_auth()).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise subprocess.TimeoutExpired(f"waiting for {url}", timeout)


class Fleet:
    """What the fixture stood up; every attribute is torn down by the fixture."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []
        self.containers: dict[str, str] = {}  # inventory name -> container name
        self.network = ""
        self.gateway = ""
        self.collector_url = ""
        self.db = ""
        self.inventory = workdir / "inventory.yml"
        self.vars_file = workdir / "fleet-vars.json"

    def spawn(self, args: list[str], log: str, env: dict | None = None) -> subprocess.Popen:
        with open(self.workdir / log, "ab") as f:
            p = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        self.procs.append(p)
        return p

    def playbook(self, name: str, *, timeout: float, extra: dict | None = None,
                 limit: str | None = None) -> tuple[int, dict, str]:
        return run_playbook(ROOT / "ansible" / "playbooks" / name, self.inventory,
                            [self.vars_file], extra=extra, limit=limit, timeout=timeout,
                            env={"INFERFLEET_COLLECTOR_TOKEN": TOKEN}, cwd=self.workdir)

    def sh(self, node: str, cmd: str, timeout: float = 60) -> str:
        p = podman("exec", self.containers[node], "bash", "-c", cmd, timeout=timeout, check=False)
        assert p.returncode == 0, f"{node}: {cmd}: {p.stdout}{p.stderr}"
        return p.stdout

    def dpkg(self, node: str) -> dict[str, str]:
        out = self.sh(node, "dpkg-query -W -f='${Package} ${Version}\\n'")
        return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)

    def runs(self, **params) -> list[dict]:
        r = httpx.get(f"{self.collector_url}/v1/runs", params={"limit": 1000, **params},
                      headers=_auth(), timeout=30)
        r.raise_for_status()
        return r.json()

    def run_doc(self, run_id: str) -> dict:
        r = httpx.get(f"{self.collector_url}/v1/runs/{run_id}", headers=_auth(), timeout=30)
        r.raise_for_status()
        return r.json()

    def report(self, out: Path, timeout: float) -> subprocess.CompletedProcess:
        """`agent fleet report` the way `make report` runs it: from the running collector."""
        return subprocess.run(
            [str(VENV_BIN / "agent"), "fleet", "report", "--collector", self.collector_url,
             "--out", str(out), "--outputs", "html,md,csv"],
            capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=_report_env())


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (make system-deps installs it)")
    if os.geteuid() != 0:
        pytest.skip("the node containers need root podman (systemd inside)")
    f = Fleet(tmp_path_factory.mktemp("e2e"))
    tag = uuid.uuid4().hex[:8]
    try:
        with Stage("image+wheel+aptrepo") as st:
            image = node_image(timeout=st.left())
            wheel = build_agent_wheel(f.workdir / "dist", timeout=st.left())
            aptrepo = f.workdir / "aptrepo"
            subprocess.run([sys.executable, str(ROOT / "tests/fixtures/aptrepo/build.py"), str(aptrepo)],
                           check=True, capture_output=True, timeout=st.left())

        with Stage("network") as st:
            f.network = f"inferfleet-e2e-{tag}"
            podman("network", "create", f.network, timeout=st.left())
            info = json.loads(podman("network", "inspect", f.network, timeout=st.left()).stdout)[0]
            f.gateway = info["subnets"][0]["gateway"]

        with Stage("nodes up") as st:
            # 2. the nodes, and the inventory from a Terraform-shaped output document
            find_links, indexes, mounts = local_pip_sources()
            nodes = {}
            for name, http_port in NODES.items():
                cname = f"inferfleet-e2e-{tag}-{name}"
                f.containers[name] = cname  # removed by the teardown even if the boot fails
                # privileged: Docker (the container_runtime role) runs inside the node. /dev/shm
                # closer to a VM's (half its memory there) than podman's default 64 MB: Triton's
                # python-backend stubs exchange every request through it, and tune.yml loads
                # candidate configurations beside the served models
                start_node(cname, image, network=f.network, mounts=mounts, hostname=name,
                           extra=["--privileged", "--shm-size=2g"], timeout=st.left())
                nodes[name] = {
                    "public_ip": None, "private_ip": None, "ssh_user": "root",
                    "cloud": "podman", "region": "local", "instance_type": "container-2cpu",
                    "gpu": "none", "price_per_hour": PRICES[name],
                    "ansible_host": cname, "ansible_connection": "containers.podman.podman",
                    "ansible_python_interpreter": "/usr/bin/python3",
                    "triton_http_port": http_port, "triton_grpc_port": http_port + 1,
                    "triton_metrics_port": http_port + 2,
                }
        with Stage("collector") as st:
            # the gateway address exists on this host once a container uses the network
            # 1. the collector, on the address the nodes reach the controller at
            port = free_port(f.gateway)
            f.db = f"sqlite:///{f.workdir / 'collector.db'}"
            env = {**os.environ, "INFERFLEET_COLLECTOR_TOKEN": TOKEN}
            f.spawn([str(VENV_BIN / "agent"), "collector", "serve", "--db", f.db,
                     "--host", f.gateway, "--port", str(port)], "collector.log", env=env)
            f.collector_url = f"http://{f.gateway}:{port}"
            _wait_http(f.collector_url + "/healthz", timeout=st.left())
            # the stand-in for NVIDIA's repositories (an air-gapped mirror)
            apt_port = free_port(f.gateway)
            f.spawn([sys.executable, "-m", "http.server", "--bind", f.gateway, "--directory",
                     str(aptrepo), str(apt_port)], "aptrepo.log")
            _wait_http(f"http://{f.gateway}:{apt_port}/", timeout=st.left())

        with Stage("inventory"):
            from agent.infra.inventory import render_inventory

            outputs = {"nodes": {"sensitive": False, "type": "object", "value": nodes}}
            f.inventory.write_text(render_inventory(outputs))
            f.vars_file.write_text(json.dumps({
                "inferfleet_nvidia_cuda_repo_base": f"http://{f.gateway}:{apt_port}/cuda/repos",
                "inferfleet_nvidia_container_repo_base": f"http://{f.gateway}:{apt_port}/libnvidia-container",
                "container_runtime_docker_source": "distro",
                "agent_wheel": str(wheel),
                "agent_pip_find_links": find_links,
                "agent_pip_extra_index_urls": indexes,
                "agent_pip_ca_bundle": NODE_CA_BUNDLE if host_ca_bundle() else "",
                "agent_collector_url": f.collector_url,
                "triton_mode": "process",
                "inferfleet_serial": "100%",
            }))
        yield f
    finally:
        for cname in f.containers.values():
            podman("rm", "-f", "-t", "5", cname, check=False, timeout=120)
        if f.network:
            podman("network", "rm", "-f", f.network, check=False)
        for p in f.procs:
            p.terminate()
        for p in f.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture(scope="module")
def converged(fleet: Fleet) -> Fleet:
    with Stage("site.yml (fresh)") as st:
        rc, doc, raw = fleet.playbook("site.yml", timeout=st.left())
    assert rc == 0, "site.yml (fresh) failed: " + raw[-6000:]
    assert TOKEN not in raw, "the collector token leaked into Ansible's output"
    for name in NODES:
        skipped = [t for t, r in _task_results(doc, name) if r.get("skipped")]
        assert any("GPU" in t or "gpu" in t or "driver" in t.lower() for t in skipped), \
            f"{name}: no GPU step was skipped on a CPU node"
    return fleet


@pytest.fixture(scope="module")
def benched(converged: Fleet) -> Fleet:
    extra = {
        "inferfleet_bench_models": MODELS,
        "inferfleet_bench_batch_sizes": [1, 2],
        "inferfleet_bench_concurrency": [1, 2],
        "inferfleet_bench_build_args": "--formats torchscript,onnx --max-batch 4",
        "inferfleet_bench_args": "--duration 0.5 --max-windows 4 --warmup 2",
        # one short MLPerf scenario (official LoadGen) per node, pushed as its own document
        "inferfleet_bench_scenarios": [SCENARIO],
        "inferfleet_bench_scenario_args": "--formats onnx --min-duration 1 --min-queries 64",
    }
    with Stage("bench.yml") as st:
        rc, doc, raw = converged.playbook("bench.yml", extra=extra, timeout=st.left())
    assert rc == 0, "bench.yml failed: " + raw[-6000:]
    return converged


def _task_results(doc: dict, host: str):
    for play in doc.get("plays", []):
        for task in play.get("tasks", []):
            r = task.get("hosts", {}).get(host)
            if r is not None:
                yield task["task"]["name"], r


def test_each_triton_served_the_agent_built_engines(benched: Fleet) -> None:
    for name, port in NODES.items():
        manifest = json.loads(benched.sh(name, "cat /var/lib/inferfleet/engines/manifest.json"))
        engines = {k for k, rec in manifest["engines"].items() if rec["verification"]["passed"]}
        assert {f"{m}_{fmt}" for m in MODELS for fmt in ("onnx", "torchscript")} <= engines
        stats = json.loads(benched.sh(name, f"curl -fsS http://127.0.0.1:{port}/v2/models/stats"))
        served = {s["name"]: s["inference_stats"]["success"]["count"] for s in stats["model_stats"]}
        for engine in engines:
            assert served.get(engine, 0) > 0, f"{name}: Triton served nothing from {engine}: {served}"


def test_each_node_classifies_an_image_through_triton(benched: Fleet) -> None:
    """bench.yml deployed the classifiers (process mode's default): an encoded image sent to
    each node's <model>_classifier ensemble gets the labels and probabilities the same
    preprocessing and engine give in-process on that node."""
    import importlib.resources

    image = importlib.resources.files("skimage") / "data" / "chelsea.png"  # a file only: no import
    for name, port in NODES.items():
        podman("cp", str(image), f"{benched.containers[name]}:/tmp/chelsea.png", timeout=60)
        answers = {}
        for where, args in (("served", f"--url 127.0.0.1:{port}"),
                            ("local", "--local --engines /var/lib/inferfleet/engines")):
            out = benched.sh(name, f"inferfleet-agent classify /tmp/chelsea.png --model {MODELS[0]} "
                                   f"--top-k 3 --json {args}", timeout=300)
            [answer] = json.loads(out)
            answers[where] = answer["top"]
        served, local = answers["served"], answers["local"]
        assert [t["class"] for t in served] == [t["class"] for t in local], (name, served, local)
        assert all(t["label"] and 0 < t["probability"] <= 1 for t in served), served
        for s, lo in zip(served, local, strict=True):
            assert s["probability"] == pytest.approx(lo["probability"], rel=1e-3, abs=1e-5), (name, s, lo)


def test_collector_holds_each_nodes_results_exactly_once(benched: Fleet) -> None:
    runs = benched.runs()
    by_node = Counter(r["node_name"] for r in runs)
    assert by_node == {name: 3 for name in NODES}, by_node  # inprocess, triton, scenario: once each
    assert len({r["id"] for r in runs}) == len(runs)
    with Stage("push again") as st:  # nothing left behind in the spools, and pushing again adds nothing
        for name in NODES:
            assert benched.sh(name, "ls /var/lib/inferfleet/spool/ | grep -c json || true",
                              timeout=st.left()).strip() == "0"
            benched.sh(name, "inferfleet-agent report push", timeout=st.left())
    assert len(benched.runs()) == len(runs)


def test_collector_holds_each_nodes_scenario(benched: Fleet) -> None:
    """The scenario run on every node reached the collector's results table (scenario
    columns) with LoadGen's verdict and metric, and its LoadGen logs stay on the node."""
    import sqlite3

    with sqlite3.connect(benched.db.removeprefix("sqlite:///")) as db:
        rows = db.execute("SELECT run_id, node_name, model, format, scenario, scenario_valid, scenario_metric "
                          "FROM results WHERE scenario IS NOT NULL").fetchall()
    assert sorted((r[1], r[2], r[3], r[4]) for r in rows) == sorted(
        (name, model, "onnx", SCENARIO) for name in NODES for model in MODELS), rows
    for run_id, node, model, _, _, valid, metric in rows:
        doc = benched.run_doc(run_id)
        (res,) = [r for r in doc["results"] if r["model"] == model]
        s = res["scenario"]
        assert (bool(valid), metric) == (s["valid"], pytest.approx(s["metric_value"]))
        assert s["metric"] == "samples_per_second" and metric > 0 and s["samples"] >= 64
        assert s["valid"] or s["invalid_reasons"], s
        assert s["log_dir"].startswith("/var/lib/inferfleet/bench-logs/"), s["log_dir"]
        benched.sh(node, f"test -s {s['log_dir']}/mlperf_log_summary.txt && test -s {s['log_dir']}/mlperf_log_detail.txt")


def test_fleet_report_matches_the_pushed_results(benched: Fleet, tmp_path: Path) -> None:
    with Stage("report") as st:
        p = benched.report(tmp_path / "report", timeout=st.left())
    assert p.returncode == 0, p.stdout + p.stderr
    rows = list(csv.DictReader(open(tmp_path / "report" / "results.csv")))
    seen = {(r["node"], r["backend"], r["model"]) for r in rows}
    for name in NODES:
        for model in MODELS:
            for backend in ("eager", "onnx", "torchscript", "triton-onnx", "triton-torchscript"):
                assert (name, backend, model) in seen, f"report lacks {name}/{backend}/{model}"
    # every number in the report is the one the node pushed, and every pushed one is there
    pushed = {}
    for run in benched.runs():
        doc = benched.run_doc(run["id"])
        for r in doc["results"]:
            if r.get("scenario"):  # LoadGen scenarios are not in the ranking tables
                continue
            backend = ("triton-" if doc["target"] == "triton" else "") + r["format"]
            key = (doc["node"]["node_name"], r["model"], backend, str(r["batch_size"]),
                   str(r["concurrency"]))
            pushed[key] = (doc["id"], r["throughput_ips"], r["latency_ms"]["p99"])
    assert len(rows) == len(pushed)
    for r in rows:
        key = (r["node"], r["model"], r["backend"], r["batch_size"], r["concurrency"])
        run_id, ips, p99 = pushed[key]
        assert r["run_id"] == run_id
        assert float(r["throughput_ips"]) == pytest.approx(ips, rel=1e-5)
        assert float(r["p99_ms"]) == pytest.approx(p99, rel=1e-5)
        assert float(r["price_per_hour"]) == PRICES[r["node"]]
    # the server-side split per node: Triton's own queue and compute time of every served result
    # (its Prometheus counters, read by the agent at each window's edges on the node)
    for r in rows:
        if r["backend"].startswith("triton-"):
            assert float(r["queue_us"]) >= 0 and float(r["compute_us"]) > 0, r
    for run in benched.runs():
        doc = benched.run_doc(run["id"])
        for r in doc["results"]:
            if doc["target"] == "triton" and not r.get("scenario"):
                m = r["server_metrics"]
                # between the client's counts over the narrowest and the widest span the server's
                # snapshots may cover, up to the requests in flight at each span's two edges
                slack = 2 * r["concurrency"] * r["windows"]
                assert m and m["client_requests"] - slack <= m["request_success"] <= m["client_requests_max"] + slack, m
    html = (tmp_path / "report" / "report.html").read_text()
    assert all(name in html for name in NODES)
    assert "% queue)" in html  # the per-node tables show the split
    assert "<img" in html or "<svg" in html, "the HTML report has no figure"


TUNED = MODELS[0]
TUNE_VARS = {  # a tiny grid: 3 points per node, a budget no CPU misses
    "inferfleet_tune_models": [TUNED], "inferfleet_tune_formats": "onnx", "inferfleet_tune_p99_budget_ms": 5000,
    "inferfleet_tune_search": "brute", "inferfleet_tune_instances": [1], "inferfleet_tune_max_batch": [4],
    "inferfleet_tune_queue_delays": ["off", 0], "inferfleet_tune_concurrency": [2],
    "inferfleet_tune_args": "--warmup 1 --duration 0.3 --max-windows 3 --json-file /tmp/tune.json",
}


def test_tune_writes_serves_and_reports_each_nodes_best_configuration(benched: Fleet, tmp_path: Path) -> None:
    """tune.yml: `agent tune` on both nodes (model control API, no restart), the chosen
    configuration written into each node's repository and served, every point pushed, and
    the fleet report's tuning section naming both nodes (tuning points never ranked)."""
    from test_tune import check_report_tuning, check_tuned_repository

    with Stage("tune.yml") as st:
        rc, doc, raw = benched.playbook("tune.yml", extra=TUNE_VARS, timeout=st.left())
    assert rc == 0, "tune.yml failed: " + raw[-6000:]
    model = f"{TUNED}_onnx"
    for name, port in NODES.items():
        tune_doc = json.loads(benched.sh(name, "cat /tmp/tune.json"))
        local = tmp_path / name / model
        local.mkdir(parents=True)
        (local / "config.pbtxt").write_text(benched.sh(name, f"cat /var/lib/inferfleet/triton-repo/{model}/config.pbtxt"))
        chosen = check_tuned_repository(local, tune_doc)
        served = json.loads(benched.sh(name, f"curl -fsS http://127.0.0.1:{port}/v2/models/{model}/config"))
        assert served["max_batch_size"] == chosen["max_batch_size"], served
        assert ("dynamic_batching" in served) == chosen["dynamic_batching"], served
        assert {r["tuning"]["search"] for r in tune_doc["results"]} == {"brute"}
        assert any(run["id"] == tune_doc["id"] for run in benched.runs(node=name)), f"{name}: tune run not pushed"
    with Stage("report") as st:
        r = benched.report(tmp_path / "report", timeout=st.left())
    assert r.returncode == 0, r.stderr[-3000:]
    check_report_tuning((tmp_path / "report" / "report.html").read_text(),
                        (tmp_path / "report" / "report.md").read_text(), TUNED, list(NODES))


def test_rerun_changes_nothing_and_one_pin_moves_one_package(benched: Fleet, tmp_path: Path) -> None:
    with Stage("site.yml (rerun)") as st:
        rc, doc, raw = benched.playbook("site.yml", timeout=st.left())
    assert rc == 0, "site.yml (rerun) failed: " + raw[-6000:]
    for name in NODES:
        assert doc["stats"][name]["changed"] == 0, changed_tasks(doc, name)
        # ... and costs the node little: no apt (no list refresh), no pip, facts once
        runs = remote_runs(doc, name)
        heavy = [r for r in runs if r.split(":")[0].rsplit(".", 1)[-1] in ("apt", "pip")]
        assert not heavy, f"{name}: a converged node ran apt/pip: {heavy}"
        facts = [r for r in runs if r.split(":")[0].rsplit(".", 1)[-1] in ("gather_facts", "setup")]
        assert len(facts) == 1, f"{name}: facts gathered {len(facts)} times"
        assert len(runs) <= RERUN_MAX_REMOTE_RUNS, \
            f"{name}: the rerun sent {len(runs)} module runs (budget {RERUN_MAX_REMOTE_RUNS}): {runs}"

    node = "node-1"
    before = {n: benched.dpkg(n) for n in NODES}
    var, version = UPGRADED_PIN
    with Stage("site.yml (upgrade one pin)") as st:
        rc, doc, raw = benched.playbook("site.yml", extra={var: version}, limit=node, timeout=st.left())
    assert rc == 0, "site.yml (upgrade one pin) failed: " + raw[-6000:]
    after = benched.dpkg(node)
    moved = {p for p in set(before[node]) | set(after) if before[node].get(p) != after.get(p)}
    assert moved == UPGRADED_PACKAGES, moved
    assert all(after[p].startswith(version) for p in UPGRADED_PACKAGES), after
    assert benched.dpkg("node-2") == before["node-2"]

    with Stage("bench.yml (after upgrade)") as st:
        rc, doc, raw = benched.playbook(
            "bench.yml", limit=node, timeout=st.left(),
            extra={"inferfleet_bench_models": MODELS, "inferfleet_bench_batch_sizes": [1],
                   "inferfleet_bench_targets": ["inprocess"],
                   "inferfleet_bench_args": "--duration 0.5 --max-windows 4 --warmup 2"})
    assert rc == 0, "bench.yml (after upgrade) failed: " + raw[-6000:]
    with Stage("report (after upgrade)") as st:
        p = benched.report(tmp_path / "report", timeout=st.left())
    assert p.returncode == 0, p.stdout + p.stderr
    md = (tmp_path / "report" / "report.md").read_text()
    comparisons = list(csv.DictReader(open(tmp_path / "report" / "comparison.csv")))
    mine = [c for c in comparisons if c["node"] == node]
    assert mine, f"no before/after comparison for {node}: {comparisons[:3]}"
    for c in mine:
        assert "cudnn=9.5.0.50" in c["before_stack"] and f"cudnn={version}" in c["after_stack"], c
    assert not [c for c in comparisons if c["node"] == "node-2"]
    assert "## Before/after stack comparison" in md and f"**{node}**: cudnn 9.5.0.50→{version}" in md
