"""The Makefile's fleet targets, without starting anything: `make -n` shows what
a target would run; the runs that must fail stop before the agent starts.

`-o .venv/.installed` keeps make from (re)building the virtualenv: these tests
check the targets' own commands, in seconds."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def _make(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    base.pop("INFERFLEET_COLLECTOR_TOKEN", None)
    return subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**base, **(env or {})})


def _serve_line(out: str) -> str:
    lines = [ln for ln in out.splitlines() if "collector serve" in ln]
    assert len(lines) == 1, out
    return lines[0]


def test_help_lists_the_fleet_targets() -> None:
    p = _make("help")
    assert p.returncode == 0, p.stderr
    targets = {ln.split()[0] for ln in p.stdout.splitlines() if ln.strip()}
    assert {"collector", "collect", "configure", "bench", "report", "provision", "destroy"} <= targets


def test_collector_on_a_private_address_binds_where_the_nodes_reach_it() -> None:
    p = _make("-n", "collector", "COLLECTOR_URL=http://10.0.0.2:8080")
    assert p.returncode == 0, p.stderr
    line = _serve_line(p.stdout)
    # 10.0.0.2 itself if this machine has it, else every address
    assert re.search(r"--host (0\.0\.0\.0|10\.0\.0\.2) --port 8080\b", line), line
    assert "binding" in p.stderr and "nodes can reach it" in p.stderr, p.stderr


def test_collector_on_loopback_stays_on_loopback() -> None:
    for url, host, port in (("http://127.0.0.1:8080", "127.0.0.1", "8080"),
                            ("http://localhost:9123/", "localhost", "9123"),
                            ("http://127.0.0.1", "127.0.0.1", "8080")):  # no port: the collector port
        p = _make("-n", "collector", f"COLLECTOR_URL={url}")
        assert p.returncode == 0, p.stderr
        assert f"--host {host} --port {port}" in _serve_line(p.stdout), p.stdout
        assert "0.0.0.0" not in p.stdout


def test_collector_bind_override() -> None:
    p = _make("-n", "collector", "COLLECTOR_URL=http://10.0.0.2:8080", "COLLECTOR_BIND=127.0.0.1")
    assert p.returncode == 0, p.stderr
    assert "--host 127.0.0.1 --port 8080" in _serve_line(p.stdout)


@pytest.mark.parametrize(("args", "env", "message"), [
    (["COLLECTOR_URL=ftp://10.0.0.2:8080"], {"INFERFLEET_COLLECTOR_TOKEN": "t"},
     "error: COLLECTOR_URL must look like http://HOST:PORT"),
    (["COLLECTOR_URL=http://10.0.0.2:http"], {"INFERFLEET_COLLECTOR_TOKEN": "t"},
     "error: COLLECTOR_URL has a bad port"),
    (["COLLECTOR_URL=http://10.0.0.2:8080"], {}, "error: INFERFLEET_COLLECTOR_TOKEN is not set"),
], ids=["scheme", "port", "no-token"])
def test_collector_bad_input_fails_before_starting(args: list[str], env: dict, message: str) -> None:
    p = _make("collector", *args, env=env)
    assert p.returncode != 0
    assert message in p.stderr, p.stderr
    assert "collector serve" not in p.stdout  # the agent never started


def test_collect_runs_collect_yml(tmp_path: Path) -> None:
    inv = tmp_path / "inventory.yml"
    inv.write_text("all: {}\n")
    p = _make("-n", "collect", f"INVENTORY={inv}", "COLLECTOR_URL=http://10.0.0.2:8080", "COLLECT_REMOVE=1")
    assert p.returncode == 0, p.stderr
    line = next(ln for ln in p.stdout.splitlines() if "ansible-playbook" in ln)
    assert f"-i {inv} ansible/playbooks/collect.yml" in line
    extra = p.stdout[p.stdout.index("-e '") + 4:].split("'")[0]
    import json

    doc = json.loads(extra)
    assert doc["inferfleet_collect_push_url"] == "http://10.0.0.2:8080"
    assert doc["inferfleet_collect_remove"] is True
    assert Path(doc["inferfleet_collect_dir"]).is_absolute()
    assert doc["inferfleet_collect_agent"].endswith("/bin/agent")
    # COLLECT_PUSH=0: fetch only (collect.yml skips the push on an empty URL)
    p = _make("-n", "collect", f"INVENTORY={inv}", "COLLECT_PUSH=0")
    assert '"inferfleet_collect_push_url": ""' in p.stdout


def test_collect_without_inventory_says_so(tmp_path: Path) -> None:
    p = _make("collect", f"INVENTORY={tmp_path / 'missing.yml'}")
    assert p.returncode == 2
    assert "does not exist: run 'make provision' first" in p.stderr


def _tf_default(path: Path, variable: str) -> int:
    text = path.read_text()
    m = re.search(r'variable\s+"' + variable + r'"\s*\{(.*?)\n\}', text, re.S)
    assert m, f"{path}: no variable {variable}"
    d = re.search(r"default\s*=\s*(\d+)", m.group(1))
    assert d, f"{path}: {variable} has no numeric default"
    return int(d.group(1))


def test_one_collector_port_everywhere() -> None:
    """fleet.env.example, the Makefile default and the Terraform security groups agree (8080)."""
    env = (ROOT / "fleet.env.example").read_text()
    m = re.search(r"^COLLECTOR_URL=(\S+)$", env, re.M)
    assert m, "fleet.env.example sets no COLLECTOR_URL"
    assert re.search(r":8080/?$", m.group(1)), m.group(1)
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^COLLECTOR_URL\s*\?=\s*http://127\.0\.0\.1:8080$", make, re.M)
    tf = sorted((ROOT / "terraform").glob("**/variables.tf"))
    ports = {str(p.relative_to(ROOT)): _tf_default(p, "collector_port")
             for p in tf if '"collector_port"' in p.read_text()}
    assert len(ports) >= 4 and set(ports.values()) == {8080}, ports


def test_collect_without_the_token_fails_before_fetching(tmp_path: Path) -> None:
    """make collect pushes with the collector token: without it, collect.yml stops
    before it fetches (or deletes) anything on the nodes."""
    inv = tmp_path / "inventory.yml"
    inv.write_text("all:\n  children:\n    inferfleet_nodes:\n      hosts: {}\n")
    p = _make("collect", f"INVENTORY={inv}", "COLLECTOR_URL=http://127.0.0.1:9",
              f"COLLECT_DIR={tmp_path / 'collected'}")
    assert p.returncode != 0
    assert "collector token in INFERFLEET_COLLECTOR_TOKEN" in p.stdout + p.stderr, p.stdout[-2000:]
    assert not (tmp_path / "collected").exists()
