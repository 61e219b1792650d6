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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
CONTAINERS_CONF = ROOT / "scripts" / "containers.conf"
NODE_CA_BUNDLE = "/etc/inferfleet-test/ca-bundle.crt"


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


def node_image() -> str:
    """Build (cached) and name the node image."""
    script = ROOT / "scripts" / "node-image.sh"
    p = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=900,
                       env=ansible_env())
    assert p.returncode == 0, p.stdout + p.stderr
    return subprocess.run(["bash", str(script), "--print-name"], capture_output=True, text=True,
                          check=True).stdout.strip()


def build_agent_wheel(dist: Path) -> Path:
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(dist), str(ROOT)], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"})
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
               network: str | None = None, extra: list[str] | None = None) -> None:
    """Start a node container and wait until systemd has booted."""
    run = ["run", "-d", "--name", name, "--hostname", hostname, "--systemd=always"]
    if network:
        run += ["--network", network]
    for m in mounts:
        run += ["-v", f"{m}:{m}:ro"]
    ca = host_ca_bundle()
    if ca:
        run += ["-v", f"{ca}:{NODE_CA_BUNDLE}:ro"]
    podman(*run, *(extra or []), image, "/sbin/init")
    podman("exec", name, "bash", "-c",
           "for i in $(seq 90); do s=$(systemctl is-system-running 2>/dev/null || true);"
           " case $s in running|degraded) exit 0;; esac; sleep 1; done; exit 1", timeout=120)


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
