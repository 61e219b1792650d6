"""The ONE Ansible inventory renderer: from a ``terraform output -json``
document (the ``nodes`` contract shared by every cloud) through
``templates/inventory.yml.j2``.

Groups: ``inferfleet_nodes`` (every node), ``cloud_<cloud>`` and ``gpu_<gpu>``.
Host vars: ansible_host (public_ip, else private_ip), ansible_user (ssh_user),
cloud, region, instance_type, gpu, price_per_hour, private_ip; any other key a
node carries (ansible_connection, ansible_port, triton ports, ...) passes
through unchanged, and explicit ansible_host/ansible_user win."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from agent.errors import AgentError

CONTRACT = ("public_ip", "private_ip", "ssh_user", "cloud", "region", "instance_type", "gpu",
            "price_per_hour")
NODES_GROUP = "inferfleet_nodes"

# Lets the agent role read the contract without knowing about Terraform.
AGENT_ROLE_VARS = {
    "agent_cloud": "{{ cloud }}",
    "agent_region": "{{ region }}",
    "agent_instance_type": "{{ instance_type }}",
    "agent_price_per_hour": "{{ price_per_hour | default(0, true) }}",
}


class Node(BaseModel):
    model_config = ConfigDict(extra="allow")

    public_ip: str | None = None
    private_ip: str | None = None
    ssh_user: str | None = None
    cloud: str
    region: str | None = None
    instance_type: str | None = None
    gpu: str | None = None
    price_per_hour: float | None = None


def group_name(prefix: str, value: str) -> str:
    """An Ansible-safe group name: ``gpu`` + ``RTX 3080`` -> ``gpu_rtx_3080``."""
    slug = re.sub(r"[^a-z0-9]+", "_", value.lower()).strip("_") or "unknown"
    return f"{prefix}_{slug}"


def nodes_from_outputs(outputs: Mapping[str, Any]) -> dict[str, dict]:
    """The ``nodes`` map of a ``terraform output -json`` document (or of a plain
    ``{"nodes": {...}}``), validated against the contract."""
    if not isinstance(outputs, Mapping) or "nodes" not in outputs:
        raise AgentError("the Terraform outputs have no 'nodes' output: is this a fleet configuration?")
    nodes = outputs["nodes"]
    if isinstance(nodes, Mapping) and "value" in nodes and "type" in nodes:
        nodes = nodes["value"]
    if not isinstance(nodes, Mapping):
        raise AgentError("the 'nodes' output must map node names to node objects")
    out: dict[str, dict] = {}
    for name, node in nodes.items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", str(name)):
            raise AgentError(f"node name {name!r} is not a valid inventory host name")
        try:
            out[str(name)] = Node.model_validate(node).model_dump()
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            raise AgentError(f"node {name}: {where}: {err['msg']}") from None
    return out


def host_vars(node: dict) -> dict[str, Any]:
    hv: dict[str, Any] = {
        "ansible_host": node.get("public_ip") or node.get("private_ip"),
        "ansible_user": node.get("ssh_user"),
    }
    for k in ("cloud", "region", "instance_type", "gpu", "price_per_hour", "private_ip"):
        hv[k] = node.get(k)
    for k, v in node.items():  # pass-through extras (and explicit ansible_* overrides)
        if k not in CONTRACT:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
                raise AgentError(f"host variable {k!r} is not a valid Ansible variable name")
            hv[k] = v
    if hv["ansible_host"] is None:
        hv.pop("ansible_host")
    if hv["ansible_user"] is None:
        hv.pop("ansible_user")
    return hv


def render_inventory(outputs: Mapping[str, Any] | Sequence[Mapping[str, Any]],
                     group_vars: Mapping[str, Any] | None = None,
                     source: str = "terraform output -json") -> str:
    """Render the YAML inventory from one or more output documents (several
    clouds may be combined; node names must be unique across them)."""
    from agent.templating import render

    docs = [outputs] if isinstance(outputs, Mapping) else list(outputs)
    hosts: dict[str, dict] = {}
    for doc in docs:
        for name, node in nodes_from_outputs(doc).items():
            if name in hosts:
                raise AgentError(f"node {name} appears twice: node names must be unique across clouds")
            hosts[name] = node
    if not hosts:
        raise AgentError("the 'nodes' output is empty: nothing to put in the inventory")
    groups: dict[str, list[str]] = {}
    for name, node in sorted(hosts.items()):
        for g in (group_name("cloud", node["cloud"]), group_name("gpu", node.get("gpu") or "none")):
            groups.setdefault(g, []).append(name)
    all_vars = dict(AGENT_ROLE_VARS)
    all_vars.update(group_vars or {})
    return render(
        "inventory.yml.j2",
        source=source,
        nodes_group=NODES_GROUP,
        hosts={name: host_vars(node) for name, node in sorted(hosts.items())},
        groups=dict(sorted(groups.items())),
        all_vars=all_vars,
    )
