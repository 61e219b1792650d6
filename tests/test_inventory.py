"""The inventory renderer, from output documents of both clouds (and of the
e2e's Podman containers), parsed back by the real `ansible-inventory --list`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.errors import AgentError
from agent.infra.inventory import render_inventory

pytestmark = pytest.mark.terraform
BIN = Path(sys.executable).parent


def tf_output(nodes: dict) -> dict:
    return {"nodes": {"sensitive": False, "type": ["map", ["object", {}]], "value": nodes}}


GC = tf_output({
    "inferfleet-gc-1": {"public_ip": "185.1.2.3", "private_ip": "10.1.0.4", "ssh_user": "ubuntu",
                        "cloud": "genesiscloud", "region": "NORD-NO-KRS-1",
                        "instance_type": "vcpu-4_memory-16g_nvidia-rtx-3080-1", "gpu": "RTX 3080",
                        "price_per_hour": 0.4},
    "inferfleet-gc-2": {"public_ip": None, "private_ip": "10.1.0.5", "ssh_user": "ubuntu",
                        "cloud": "genesiscloud", "region": "NORD-NO-KRS-1",
                        "instance_type": "vcpu-4_memory-16g_nvidia-rtx-3080-1", "gpu": "RTX 3080",
                        "price_per_hour": 0.4},
})
AWS = tf_output({
    "inferfleet-aws-1": {"public_ip": "54.1.2.3", "private_ip": "172.31.0.9", "ssh_user": "ubuntu",
                         "cloud": "aws", "region": "us-east-1", "instance_type": "g4dn.xlarge",
                         "gpu": "T4", "price_per_hour": 0.526},
})
PODMAN = {"nodes": {
    "node-a": {"public_ip": "127.0.0.1", "private_ip": "10.88.0.2", "ssh_user": "root", "cloud": "local",
               "region": "here", "instance_type": "container", "gpu": "none", "price_per_hour": 0,
               "ansible_connection": "containers.podman.podman", "ansible_host": "inferfleet-node-a",
               "triton_http_port": 18000},
}}


def ansible_list(tmp_path: Path, text: str) -> dict:
    inv = tmp_path / "inventory.yml"
    inv.write_text(text)
    r = subprocess.run([str(BIN / "ansible-inventory"), "-i", str(inv), "--list"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "[WARNING]" not in r.stderr, r.stderr
    return json.loads(r.stdout)


def test_genesiscloud_and_aws_in_one_inventory(tmp_path):
    listed = ansible_list(tmp_path, render_inventory([GC, AWS], group_vars={"agent_collector_url": "http://c:8080"}))
    assert sorted(listed["inferfleet_nodes"]["hosts"]) == ["inferfleet-aws-1", "inferfleet-gc-1", "inferfleet-gc-2"]
    assert sorted(listed["cloud_genesiscloud"]["hosts"]) == ["inferfleet-gc-1", "inferfleet-gc-2"]
    assert listed["cloud_aws"]["hosts"] == ["inferfleet-aws-1"]
    assert sorted(listed["gpu_rtx_3080"]["hosts"]) == ["inferfleet-gc-1", "inferfleet-gc-2"]
    assert listed["gpu_t4"]["hosts"] == ["inferfleet-aws-1"]
    hv = listed["_meta"]["hostvars"]
    assert hv["inferfleet-gc-1"]["ansible_host"] == "185.1.2.3"
    assert hv["inferfleet-gc-2"]["ansible_host"] == "10.1.0.5"  # no public IP: the private one
    expected = {
        "ansible_user": "ubuntu", "cloud": "aws", "region": "us-east-1", "instance_type": "g4dn.xlarge",
        "gpu": "T4", "price_per_hour": 0.526, "private_ip": "172.31.0.9",
        "agent_collector_url": "http://c:8080"}
    assert {k: hv["inferfleet-aws-1"][k] for k in expected} == expected
    assert hv["inferfleet-gc-1"]["price_per_hour"] == 0.4


def test_extra_host_vars_pass_through(tmp_path):
    listed = ansible_list(tmp_path, render_inventory(PODMAN))
    hv = listed["_meta"]["hostvars"]["node-a"]
    assert hv["ansible_connection"] == "containers.podman.podman"
    assert hv["ansible_host"] == "inferfleet-node-a"  # explicit value wins over public_ip
    assert hv["triton_http_port"] == 18000 and hv["ansible_user"] == "root"
    assert listed["cloud_local"]["hosts"] == ["node-a"] and listed["gpu_none"]["hosts"] == ["node-a"]


def test_cli_inventory_from_json(tmp_path):
    (tmp_path / "gc.json").write_text(json.dumps(GC))
    out = tmp_path / "inv.yml"
    r = subprocess.run([str(BIN / "agent"), "infra", "inventory", "--from-json", str(tmp_path / "gc.json"),
                        "--inventory", str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "inferfleet-gc-1" in ansible_list(tmp_path, out.read_text())["inferfleet_nodes"]["hosts"]


@pytest.mark.parametrize("doc, message", [
    ({"other": {}}, "no 'nodes' output"),
    (tf_output({}), "empty"),
    (tf_output({"a": {"public_ip": "1.2.3.4"}}), "cloud"),
    (tf_output({"bad name": {"cloud": "aws"}}), "not a valid inventory host name"),
    (tf_output({"a": {"cloud": "aws", "bad-var": 1}}), "not a valid Ansible variable name"),
])
def test_bad_documents(doc, message):
    with pytest.raises(AgentError, match=message):
        render_inventory(doc)


def test_duplicate_names_across_clouds():
    with pytest.raises(AgentError, match="appears twice"):
        render_inventory([GC, GC])
