"""Fleet monitoring files rendered from the Ansible inventory: a Prometheus scrape
configuration and a Grafana dashboard (``templates/monitoring/``).

The inventory is read with ``ansible-inventory --list`` (group_vars and host
vars resolved the way the playbooks see them). Every host of
``inferfleet_nodes`` is scraped at its ``private_ip`` (else ``ansible_host``):
Triton's metrics port (``triton_metrics_port``, default from the triton role)
and node-exporter; hosts with a GPU (the ``gpu`` host variable of the
Terraform contract) also DCGM-exporter. The collector's own ``/metrics`` is a
job of its own when its address is given. Triton binds 127.0.0.1 by default
(``triton_bind_address``): open it to the private interface for a Prometheus
that runs elsewhere."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from agent.errors import AgentError
from agent.infra.inventory import NODES_GROUP
from agent.infra.settings import repo_root

NODE_EXPORTER_PORT = 9100  # prometheus-node-exporter's default
DCGM_EXPORTER_PORT = 9400  # NVIDIA dcgm-exporter's default
FILES = {"prometheus.yml": "monitoring/prometheus.yml.j2",
         "grafana-dashboard.json": "monitoring/grafana-dashboard.json.j2"}


@dataclass(frozen=True)
class Target:
    node: str
    address: str
    gpu: str | None
    cloud: str | None
    instance_type: str | None
    triton_metrics_port: int


def role_default(role: str, name: str):  # noqa: ANN201
    """A role's default (``ansible/roles/<role>/defaults/main.yml``): the one place it is set."""
    path = repo_root() / "ansible" / "roles" / role / "defaults" / "main.yml"
    return yaml.safe_load(path.read_text())[name]


def inventory_hosts(inventory: Path) -> dict[str, dict]:
    """Host vars of every ``inferfleet_nodes`` host, as ``ansible-inventory --list`` resolves them."""
    exe = shutil.which("ansible-inventory") or str(Path(sys.executable).parent / "ansible-inventory")
    if not Path(inventory).exists():
        raise AgentError(f"inventory {inventory} does not exist (make provision writes one)")
    try:
        r = subprocess.run([exe, "-i", str(inventory), "--list"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise AgentError(f"cannot run ansible-inventory: {e}") from None
    if r.returncode != 0:
        raise AgentError(f"ansible-inventory -i {inventory}: {(r.stderr.strip().splitlines() or ['failed'])[-1]}")
    data = json.loads(r.stdout)
    hostvars = data.get("_meta", {}).get("hostvars", {})

    def members(group: str) -> list[str]:
        g = data.get(group, {})
        return list(g.get("hosts", [])) + [h for child in g.get("children", []) for h in members(child)]

    hosts = sorted(set(members(NODES_GROUP)))
    if not hosts:
        raise AgentError(f"inventory {inventory} has no host in {NODES_GROUP}")
    return {h: hostvars.get(h, {}) for h in hosts}


def targets(hosts: dict[str, dict]) -> list[Target]:
    default_port = int(role_default("triton", "triton_metrics_port"))
    out = []
    for name, hv in hosts.items():
        address = hv.get("private_ip") or hv.get("ansible_host") or name
        gpu = hv.get("gpu") or None
        out.append(Target(node=name, address=str(address), gpu=None if gpu in (None, "none") else str(gpu),
                          cloud=hv.get("cloud") or hv.get("agent_cloud"),
                          instance_type=hv.get("instance_type") or hv.get("agent_instance_type"),
                          triton_metrics_port=int(hv.get("triton_metrics_port", default_port))))
    return out


def render_monitoring(hosts: dict[str, dict], collector: str | None = None, scrape_interval: str = "15s",
                      source: str = "the inventory") -> dict[str, str]:
    """{file name: text} of the Prometheus configuration and the Grafana dashboard."""
    from agent.templating import render

    if collector is not None:
        collector = collector.split("://", 1)[-1].rstrip("/")
        if not collector or "/" in collector:
            raise AgentError(f"--collector must be host:port, got {collector!r}")
    context = dict(targets=targets(hosts), collector=collector, scrape_interval=scrape_interval, source=source,
                   node_exporter_port=NODE_EXPORTER_PORT, dcgm_exporter_port=DCGM_EXPORTER_PORT)
    out = {name: render(template, **context) for name, template in FILES.items()}
    json.loads(out["grafana-dashboard.json"])  # a template bug must not write a broken dashboard
    return out
