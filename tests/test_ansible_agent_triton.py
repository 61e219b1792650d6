"""The `agent` and `triton` Ansible roles on a real node container.

A Podman container of the project's node image (scripts/node-image.sh: Debian
12, systemd as PID 1) plays the node; Ansible reaches it with the
containers.podman connection. The roles install the agent wheel built here
(`pip wheel --no-deps`) into a virtualenv on the node — torch and friends come
from this machine's local wheel indexes, bind-mounted read-only at the same
paths — write its config and token file, and run Triton (process mode: the
tritonserver bundled in nvidia-pytriton) under systemd serving a tiny
python-backend model. Checks: second converge changes nothing, files and modes,
the agent CLI and a real inference inside the node, a config change restarts
Triton and nothing else, bad input fails before anything is touched.

GPU behaviour (container mode with the NGC image, --gpus all) is verified on
real nodes only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from node_support import (
    NODE_CA_BUNDLE,
    ROOT,
    VENV_BIN,
    BoundedStage,
    ansible_env,
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

# Per-stage limits (s), generous for a busy 2-core machine (quiet: image cached
# 2 s / fresh ~90 s, first converge ~4 min, a rerun under a minute). A stage that
# overruns fails naming itself; pytest-timeout is only the backstop (the module
# fixtures run image + wheel + node + first converge inside one test's setup).
STAGE_LIMITS = {
    "node image": 1200,
    "agent wheel": 300,
    "node up": 300,
    "first converge": 1800,
    "converge": 900,
    "converge (bad input)": 600,
    "collect.yml": 600,
}
pytestmark = [pytest.mark.ansible, pytest.mark.slow, pytest.mark.triton,
              pytest.mark.timeout(sum(STAGE_LIMITS.values()) + 600)]

HERE = ROOT / "tests" / "ansible" / "agent_triton"
TOKEN = "b4-test-token-" + uuid.uuid4().hex[:12]
STACK = {"cuda_version": "12.6.2", "tensorrt_version": "10.5.0.18", "triton_version": "2.51.0"}


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return ansible_env({"ANSIBLE_LOCAL_TEMP": "/tmp/.ansible-b4-local", **(extra or {})})


class Node:
    def __init__(self, name: str, workdir: Path, base_vars: dict) -> None:
        self.name = name
        self.workdir = workdir
        self.base_vars = base_vars
        self.inventory = workdir / "hosts.yml"
        self.inventory.write_text(json.dumps({"all": {"children": {"inferfleet_nodes": {"hosts": {name: {
            "ansible_connection": "containers.podman.podman",
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_become": False,  # podman exec is root already: sudo would only cost time
        }}}}}}))

    def sh(self, cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return podman("exec", self.name, "bash", "-c", cmd, check=check, timeout=timeout)

    def converge(self, extra_vars: dict | None = None, token: str | None = TOKEN,
                 stage: str = "converge") -> tuple[int, dict, str]:
        """Run the playbook; (rc, ansible.posix.json document, raw output)."""
        vars_file = self.workdir / f"vars-{uuid.uuid4().hex[:6]}.json"
        vars_file.write_text(json.dumps({**self.base_vars, **(extra_vars or {})}))
        env = {"ANSIBLE_LOCAL_TEMP": "/tmp/.ansible-b4-local",
               **({"INFERFLEET_COLLECTOR_TOKEN": token} if token else {})}
        with BoundedStage(stage, STAGE_LIMITS[stage]) as st:
            rc, doc, raw = run_playbook(HERE / "converge.yml", self.inventory, [vars_file], env=env,
                                        cwd=self.workdir, timeout=st.left())
        self.report_durations(doc)
        return rc, doc, raw

    def report_durations(self, doc: dict, top: int = 5) -> None:
        rows = []
        for play in doc.get("plays", []):
            for task in play.get("tasks", []):
                d = task["task"].get("duration", {})
                if d.get("start") and d.get("end"):
                    from datetime import datetime

                    t = (datetime.fromisoformat(d["end"].rstrip("Z")) - datetime.fromisoformat(d["start"].rstrip("Z")))
                    rows.append((t.total_seconds(), task["task"]["name"]))
        total = sum(r[0] for r in rows)
        slow = ", ".join(f"{name} {sec:.0f}s" for sec, name in sorted(rows, reverse=True)[:top])
        print(f"\nconverge: {len(rows)} tasks, {total:.0f} s; slowest: {slow}")

    def changed_tasks(self, doc: dict) -> list[str]:
        return changed_tasks(doc, self.name)

    def stats(self, doc: dict) -> dict:
        return doc.get("stats", {}).get(self.name, {})

    def triton_invocation(self) -> str:
        return self.sh("systemctl show -p InvocationID --value inferfleet-triton").stdout.strip()


def _failure(raw: str, limit: int = 4000) -> str:
    """The failed tasks' messages (from the JSON callback), else the output's tail."""
    try:
        doc = json.loads(raw[raw.find("{"):raw.rfind("}") + 1])
        failed = [f"{t['task']['name']}: {r.get('msg', '')} {str(r.get('stderr', ''))[-1500:]}"
                  for play in doc.get("plays", []) for t in play.get("tasks", [])
                  for r in t.get("hosts", {}).values() if r.get("failed")]
        failed += [f"{i.get('item')}: {i.get('msg', '')} {str(i.get('stderr', ''))[-1500:]}"
                   for play in doc.get("plays", []) for t in play.get("tasks", [])
                   for r in t.get("hosts", {}).values() for i in r.get("results", []) if i.get("failed")]
        if failed:
            return "\n".join(failed)[-limit:]
    except (ValueError, KeyError, AttributeError):
        pass
    return raw[-limit:]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory):
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (make system-deps installs it)")
    if os.geteuid() != 0:
        pytest.skip("the node container needs root podman (debootstrap image, systemd inside)")
    workdir = tmp_path_factory.mktemp("agent-triton")
    with BoundedStage("node image", STAGE_LIMITS["node image"]) as st:
        image_name = node_image(timeout=st.left())
    with BoundedStage("agent wheel", STAGE_LIMITS["agent wheel"]) as st:
        wheel = build_agent_wheel(workdir / "dist", timeout=st.left())
    find_links, indexes, mounts = local_pip_sources()
    name = f"inferfleet-b4-{uuid.uuid4().hex[:8]}"
    try:
        with BoundedStage("node up", STAGE_LIMITS["node up"]) as st:
            start_node(name, image_name, mounts=mounts, hostname="node1", timeout=st.left())
        # the model Triton serves: written into the repository before the converge
        podman("exec", name, "mkdir", "-p", "/var/lib/inferfleet/triton-repo")
        podman("cp", str(HERE / "identity"), f"{name}:/var/lib/inferfleet/triton-repo/identity")
        # what the GPU-stack roles record after installing (preflight record.yml)
        podman("exec", name, "bash", "-c", f"mkdir -p /etc/inferfleet && echo '{json.dumps(STACK)}' > /etc/inferfleet/stack.json")
        base_vars = {
            "agent_wheel": str(wheel),
            "agent_pip_find_links": find_links,
            "agent_pip_extra_index_urls": indexes,
            "agent_pip_ca_bundle": NODE_CA_BUNDLE if host_ca_bundle() else "",
            "agent_collector_url": "http://127.0.0.1:9/",
            "agent_cloud": "test",
            "agent_region": "local",
            "agent_instance_type": "podman",
            "agent_price_per_hour": 0.42,
            "agent_labels": {"role": "molecule", "gpu": "none"},
            "agent_triton_version": "2.51.0",
            "agent_bench_timer_enabled": True,
            "triton_health_models": ["identity"],
        }
        yield Node(name, workdir, base_vars)
    finally:
        podman("rm", "-f", "-t", "5", name, check=False, timeout=120)


@pytest.fixture(scope="module")
def converged(node: Node) -> Node:
    rc, doc, raw = node.converge(stage="first converge")
    assert rc == 0, _failure(raw)
    assert node.stats(doc).get("changed", 0) > 0
    assert TOKEN not in raw, "the collector token leaked into Ansible's output"
    return node


def test_second_converge_changes_nothing(converged: Node) -> None:
    rc, doc, raw = converged.converge()
    assert rc == 0, _failure(raw)
    assert converged.changed_tasks(doc) == []
    assert converged.stats(doc)["changed"] == 0
    assert TOKEN not in raw
    # and cheaply: no apt, no pip; the agent role reads the node once (files,
    # directories, user, packages, virtualenv + pip check + CLI) and writes nothing
    runs = remote_runs(doc, converged.name)
    assert not [r for r in runs if r.split(":")[0].rsplit(".", 1)[-1] in ("apt", "pip")], runs
    agent = [r for r in runs if ": agent : " in r and "validate" not in r.lower()
             and "Check the pip" not in r and "local pip sources" not in r]
    assert agent == ["ansible.builtin.shell: agent : Read the agent's state on the node"], agent


def test_agent_installed_and_configured(converged: Node) -> None:
    n = converged
    assert n.sh("agent version").stdout.strip()  # the CLI on PATH runs
    assert n.sh("/opt/inferfleet/venv/bin/python -c 'import torch, onnxruntime, pytriton; print(torch.__version__)'"
                ).stdout.startswith("2.14.1")
    modes = n.sh("stat -c '%n %a %U' /etc/inferfleet/agent.toml /etc/inferfleet/agent.env "
                 "/usr/local/sbin/inferfleet-agent /var/lib/inferfleet").stdout.split("\n")
    assert modes[:4] == [
        "/etc/inferfleet/agent.toml 644 root",
        "/etc/inferfleet/agent.env 600 root",
        "/usr/local/sbin/inferfleet-agent 750 root",
        "/var/lib/inferfleet 750 inferfleet",
    ]
    toml = n.sh("cat /etc/inferfleet/agent.toml").stdout
    assert TOKEN not in toml
    assert 'collector_url = "http://127.0.0.1:9/"' in toml
    assert "price_per_hour = 0.42" in toml
    assert '"role" = "molecule"' in toml
    assert f"INFERFLEET_COLLECTOR_TOKEN='{TOKEN}'" in n.sh("cat /etc/inferfleet/agent.env").stdout
    # the agent reads that config: the node identity it reports comes from it
    cfg = n.sh("/usr/local/sbin/inferfleet-agent version && INFERFLEET_CONFIG=/etc/inferfleet/agent.toml "
               "/opt/inferfleet/venv/bin/python -c 'from agent.config import load_config; c = load_config();"
               " print(c.node_name, c.cloud, c.price_per_hour, c.labels[\"role\"], c.spool_dir)'").stdout.split("\n")
    assert cfg[1].split() == [n.name, "test", "0.42", "molecule", "/var/lib/inferfleet/spool"]
    # the stack the engines were built against (stack.json is the GPU-stack roles')
    assert json.loads(n.sh("cat /var/lib/inferfleet/toolchain-stack.json").stdout) == STACK
    assert n.sh("systemctl is-active inferfleet-bench.timer").stdout.strip() == "active"
    assert n.sh("systemctl is-enabled inferfleet-bench.timer").stdout.strip() == "enabled"


def test_triton_serves_inside_the_node(converged: Node) -> None:
    n = converged
    assert n.sh("systemctl is-active inferfleet-triton").stdout.strip() == "active"
    assert n.sh("systemctl show -p User --value inferfleet-triton").stdout.strip() == "inferfleet"
    code = n.sh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/v2/health/ready").stdout
    assert code == "200"
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32",
                                   "data": [1.5, -2.0, 3.25, 0.0]}]})
    out = n.sh(f"curl -sf -X POST -H 'Content-Type: application/json' -d '{body}' "
               "http://127.0.0.1:8000/v2/models/identity/infer").stdout
    assert json.loads(out)["outputs"][0]["data"] == [1.5, -2.0, 3.25, 0.0]
    # ports bound to the configured address only (127.0.0.1 by default)
    listen = n.sh("ss -Hltn 'sport = :8000'").stdout
    assert "127.0.0.1:8000" in listen and "0.0.0.0:8000" not in listen


def test_upgrade_rerun_restarts_triton_and_changes_nothing_else(converged: Node) -> None:
    """Rerun with new settings = the upgrade: a new TensorRT in stack.json (what a
    matrix bump makes the stack roles record) is a toolchain change (engines
    rebuilt — none configured here — and Triton restarted), a new port changes
    the unit; Triton restarts once, is healthy on the new port, nothing else moves."""
    n = converged
    before = n.triton_invocation()
    n.sh("sed -i 's/10.5.0.18/10.7.0.23/' /etc/inferfleet/stack.json")
    rc, doc, raw = n.converge({"triton_http_port": 8010})
    assert rc == 0, _failure(raw)
    assert n.changed_tasks(doc) == [
        "agent : Compare the stack with the one the engines were built against",
        "triton : Install the Triton systemd unit",
        "triton : Restart Triton",
    ]
    assert n.triton_invocation() != before
    assert "10.7.0.23" in n.sh("cat /var/lib/inferfleet/toolchain-stack.json").stdout
    code = n.sh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8010/v2/health/ready").stdout
    assert code == "200"
    assert n.sh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/v2/health/ready",
                check=False).stdout != "200"


@pytest.mark.parametrize(
    ("extra", "token", "message"),
    [
        ({}, None, "no collector token was given"),
        ({"agent_pip_extra_index_urls": ["http://127.0.0.1:9/simple"]}, TOKEN,
         "the pip index http://127.0.0.1:9/simple is not reachable"),
        ({"triton_http_port": 8001}, TOKEN, "the three ports distinct"),
    ],
    ids=["missing-token", "unreachable-mirror", "port-clash"],
)
def test_bad_input_fails_before_touching_the_node(converged: Node, extra: dict, token: str | None,
                                                  message: str) -> None:
    n = converged
    before = n.triton_invocation()
    rc, doc, raw = n.converge(extra, token=token, stage="converge (bad input)")
    assert rc != 0
    assert message in raw, _failure(raw)
    assert n.stats(doc).get("changed", 0) == 0
    assert n.triton_invocation() == before


def test_collect_fetches_spooled_results_and_pushes_them(converged: Node, tmp_path: Path) -> None:
    """collect.yml: results spooled on a node that could not reach the collector
    are fetched to the controller and pushed from there to a real collector."""
    sys.path.insert(0, str(ROOT / "tests"))
    from collector_support import TOKEN as COLLECTOR_TOKEN
    from collector_support import Collector

    from testing.synthetic_fleet import make_document, make_node

    n = converged
    docs = [make_document(make_node(7), models=("resnet18",)) for _ in range(2)]
    for d in docs:
        n.sh(f"cat > /var/lib/inferfleet/spool/{d.id}.json <<'EOF'\n{d.model_dump_json()}\nEOF\n"
             f"chown inferfleet: /var/lib/inferfleet/spool/{d.id}.json")
    collector = Collector(f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "c.log").start()
    try:
        out = tmp_path / "collected"
        cfg = n.workdir / "ansible.cfg"
        cfg.write_text("[defaults]\n")
        with BoundedStage("collect.yml", STAGE_LIMITS["collect.yml"]) as st:
            p = subprocess.run(
                [str(VENV_BIN / "ansible-playbook"), "-i", str(n.inventory),
                 "-e", json.dumps({"inferfleet_collect_dir": str(out), "inferfleet_collect_remove": True,
                                   "inferfleet_collect_push_url": collector.url,
                                   "inferfleet_collect_agent": str(VENV_BIN / "agent")}),
                 str(ROOT / "ansible" / "playbooks" / "collect.yml")],
                capture_output=True, text=True, timeout=st.left(), cwd=n.workdir,
                env=_env({"ANSIBLE_CONFIG": str(cfg), "INFERFLEET_COLLECTOR_TOKEN": COLLECTOR_TOKEN}))
        assert p.returncode == 0, _failure(p.stdout + p.stderr)
        assert COLLECTOR_TOKEN not in p.stdout + p.stderr
        stored = {r["id"] for r in collector.get("/v1/runs", limit=100).json()}
        assert {d.id for d in docs} <= stored
        assert not list((out / n.name / "spool").glob("*.json"))  # pushed, so gone from the controller
        assert n.sh("ls /var/lib/inferfleet/spool").stdout.split() == []  # fetched, so removed on the node
    finally:
        collector.stop()


@pytest.mark.skipif(os.environ.get("INFERFLEET_TEST_BENCH_PLAYBOOK") != "1",
                    reason="opt-in (builds engines on the node, beyond this suite's time budget): "
                    "set INFERFLEET_TEST_BENCH_PLAYBOOK=1 to run it")
def test_bench_playbook_builds_serves_and_measures(converged: Node) -> None:
    """bench.yml on the node: build (incremental) + repository, Triton restarted on
    the new engines, `agent bench` in-process and through Triton; results spooled."""
    n = converged
    port = next(p for p in (8000, 8010) if n.sh(
        f"curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{p}/v2/health/ready", check=False).stdout == "200")
    vars_file = n.workdir / "bench-vars.json"
    vars_file.write_text(json.dumps({
        **n.base_vars, "triton_http_port": port,
        "inferfleet_bench_models": ["squeezenet1_1"], "inferfleet_bench_batch_sizes": [1],
        "inferfleet_bench_concurrency": [1], "inferfleet_bench_push": False,
        "inferfleet_bench_build_args": "--formats onnx",
        "inferfleet_bench_args": "--duration 0.5 --max-windows 2 --warmup 2",
    }))
    cfg = n.workdir / "ansible.cfg"
    cfg.write_text("[defaults]\n")
    p = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(n.inventory), "-e", f"@{vars_file}",
         str(ROOT / "ansible" / "playbooks" / "bench.yml")],
        capture_output=True, text=True, timeout=900, cwd=n.workdir,
        env=_env({"ANSIBLE_CONFIG": str(cfg), "INFERFLEET_COLLECTOR_TOKEN": TOKEN}))
    assert p.returncode == 0, _failure(p.stdout + p.stderr)
    models = n.sh(f"curl -sf -X POST http://127.0.0.1:{port}/v2/repository/index").stdout
    assert "squeezenet1_1_onnx" in models
    spooled = n.sh("ls /var/lib/inferfleet/spool").stdout.split()
    assert len(spooled) >= 2  # one document per target
