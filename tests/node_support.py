"""Node containers for the Ansible and end-to-end tests.

A node is a Podman container of the project's node image
(scripts/node-image.sh: Debian 12, systemd as PID 1) that Ansible reaches
through the containers.podman connection. The agent is installed on it from a
wheel built here; torch and friends come from this machine's local wheel
indexes, bind-mounted read-only at the same paths (PyPI proper would mean
~3 GB of CUDA wheels per node)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
CONTAINERS_CONF = ROOT / "scripts" / "containers.conf"
NODE_CA_BUNDLE = "/etc/inferfleet-test/ca-bundle.crt"


class BoundedStage:
    """One bounded stage of a container test: every subprocess of the stage gets
    ``timeout=stage.left()``, and one that overruns fails the test naming the
    stage and its limit. The container tests set pytest-timeout only as a
    backstop (the sum of their stage limits), since their module fixtures run
    several stages inside one test's setup."""

    def __init__(self, name: str, limit: float) -> None:
        self.name = name
        self.limit = limit

    def __enter__(self) -> "BoundedStage":
        self.t0 = time.monotonic()
        return self

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        """Seconds left of this stage's limit (at least 1: an overrun then times out)."""
        return max(1.0, self.limit - self.elapsed())

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and issubclass(exc_type, subprocess.TimeoutExpired):
            cmd = exc.cmd if isinstance(exc.cmd, str) else " ".join(map(str, exc.cmd))
            raise StageTimeout(f"stage '{self.name}' did not finish within its limit of "
                               f"{self.limit:.0f} s; still running: {cmd[:300]}") from exc


class StageTimeout(AssertionError):
    pass


def ansible_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        CONTAINERS_CONF=str(CONTAINERS_CONF),
        ANSIBLE_ROLES_PATH=str(ROOT / "ansible" / "roles"),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
    )
    env.pop("INFERFLEET_COLLECTOR_TOKEN", None)
    env.update(extra or {})
    return env


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout,
                          check=check, env=ansible_env())


def node_image(timeout: float = 900) -> str:
    """Build (cached) and name the node image."""
    script = ROOT / "scripts" / "node-image.sh"
    p = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=timeout,
                       env=ansible_env())
    assert p.returncode == 0, p.stdout + p.stderr
    return subprocess.run(["bash", str(script), "--print-name"], capture_output=True, text=True,
                          check=True).stdout.strip()


def build_agent_wheel(dist: Path, timeout: float = 300) -> Path:
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(dist), str(ROOT)], capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"})
    assert p.returncode == 0, p.stderr
    return next(dist.glob("inferfleet-*.whl"))


def local_pip_sources() -> tuple[list[str], list[str], list[str]]:
    """(find-links dirs, file:// extra index URLs, host dirs to mount) from this machine's pip config."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                         text=True, timeout=60).stdout
    find_links: list[str] = []
    indexes: list[str] = []
    for line in out.splitlines():
        key, _, value = line.partition("=")
        value = value.strip().strip("'\"")
        if key.endswith(".find-links"):
            find_links += [v for v in value.split() if Path(v).is_dir()]
        elif key.endswith(".extra-index-url") or key.endswith(".index-url"):
            indexes += [v for v in value.split() if v.startswith("file://") and Path(v[7:]).is_dir()]
    find_links, indexes = list(dict.fromkeys(find_links)), list(dict.fromkeys(indexes))
    mounts = list(dict.fromkeys(
        [*find_links, *(str(Path(u[7:]).parent) if u.rstrip("/").endswith("/simple") else u[7:]
                        for u in indexes)]))
    return find_links, indexes, mounts


def host_ca_bundle() -> str | None:
    """This machine reaches PyPI through a TLS proxy: nodes trust what the host trusts."""
    ca = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    return ca if Path(ca).is_file() else None


def start_node(name: str, image: str, *, mounts: list[str], hostname: str,
               network: str | None = None, extra: list[str] | None = None,
               timeout: float = 240) -> None:
    """Start a node container and wait (up to `timeout` s in all) until systemd has booted."""
    deadline = time.monotonic() + timeout
    run = ["run", "-d", "--name", name, "--hostname", hostname, "--systemd=always"]
    if network:
        run += ["--network", network]
    for m in mounts:
        run += ["-v", f"{m}:{m}:ro"]
    ca = host_ca_bundle()
    if ca:
        run += ["-v", f"{ca}:{NODE_CA_BUNDLE}:ro"]
    podman(*run, *(extra or []), image, "/sbin/init", timeout=max(1.0, deadline - time.monotonic()))
    boot = max(1, int(deadline - time.monotonic()))
    p = podman("exec", name, "bash", "-c",
               f"for i in $(seq {boot}); do s=$(systemctl is-system-running 2>/dev/null || true);"
               " case $s in running|degraded) exit 0;; esac; sleep 1; done; echo $s; exit 1",
               timeout=boot + 30, check=False)
    assert p.returncode == 0, f"node {name}: systemd did not finish booting within {timeout:.0f} s: {p.stdout}{p.stderr}"


def run_playbook(playbook: Path, inventory: Path, var_files: list[Path], *, extra: dict | None = None,
                 limit: str | None = None, env: dict[str, str] | None = None, cwd: Path,
                 timeout: float = 900) -> tuple[int, dict, str]:
    """ansible-playbook with the JSON callback: (rc, result document, raw output)."""
    args = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory)]
    for f in var_files:
        args += ["-e", f"@{f}"]
    if extra:
        args += ["-e", json.dumps(extra)]
    if limit:
        args += ["--limit", limit]
    cfg = cwd / "ansible.cfg"  # this machine's ansible settings stay out
    if not cfg.exists():
        cfg.write_text("[defaults]\nforks = 5\n")
    p = subprocess.run([*args, str(playbook)], capture_output=True, text=True, timeout=timeout,
                       env=ansible_env({"ANSIBLE_CONFIG": str(cfg), **(env or {})}), cwd=cwd)
    raw = p.stdout + p.stderr
    start = p.stdout.find("{")
    try:
        doc = json.loads(p.stdout[start:]) if start >= 0 else {}
    except ValueError:
        doc = {}
    return p.returncode, doc, raw


def changed_tasks(doc: dict, host: str) -> list[str]:
    names = []
    for play in doc.get("plays", []):
        for task in play.get("tasks", []):
            if task.get("hosts", {}).get(host, {}).get("changed"):
                names.append(task["task"]["name"])
    return names


# Actions that run on the controller only (no module is sent to the node).
LOCAL_ACTIONS = {
    "assert", "debug", "fail", "set_fact", "include_role", "include_tasks", "include_vars",
    "import_role", "import_tasks", "meta", "validate_argument_spec", "add_host", "group_by",
    "set_stats", "pause",
}


def remote_runs(doc: dict, host: str) -> list[str]:
    """The module runs a playbook sent to `host`, one entry per run (loop items count
    one each), as "action: task name": what a rerun costs the node, round trip by
    round trip. Fact gathering counts as "gather_facts"."""
    runs = []
    for play in doc.get("plays", []):
        for task in play.get("tasks", []):
            r = task.get("hosts", {}).get(host)
            if r is None or r.get("skipped"):
                continue
            action = r.get("action", "") or task["task"].get("action", "")
            if action.rsplit(".", 1)[-1] in LOCAL_ACTIONS:
                continue
            items = [i for i in r.get("results", []) if not i.get("skipped")] if "results" in r else [r]
            runs += [f"{action}: {task['task']['name']}"] * len(items)
    return runs

