"""AWS for real, offline: init/validate/`terraform test` (mock_provider) through
the provider filesystem mirror, and apply -> output -json -> inventory ->
ansible-inventory -> destroy against a local AWS emulator (moto_server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tf_support import ROOT, copy_terraform, free_port

pytestmark = [pytest.mark.terraform, pytest.mark.slow]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def aws_mirror():
    from agent.infra.mirror import mirrored_providers, plugin_mirror

    mirror = plugin_mirror()
    if mirror is None or "registry.terraform.io/hashicorp/aws" not in mirrored_providers(mirror):
        pytest.skip("no Terraform provider mirror with hashicorp/aws on this machine "
                    "(set INFERFLEET_TF_PLUGIN_MIRROR): AWS init/validate/test need it offline")
    return mirror


def test_module_init_validate_and_terraform_test(aws_mirror, tmp_path):
    from agent.infra.terraform import Terraform

    tree = copy_terraform(tmp_path / "terraform")
    tf = Terraform(tree / "modules" / "aws-gpu-nodes", tmp_path / "work")
    tf.init(backend=False)
    assert tf.validate()["valid"]
    rc, out = tf.test()
    print(out)
    assert rc == 0, out
    assert "7 passed, 0 failed" in out


@pytest.fixture
def moto_server(tmp_path):
    port = free_port()
    log = open(tmp_path / "moto.log", "w")
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/moto-api/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail("moto_server did not start")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def agent(*args, env, timeout=300):
    return subprocess.run([str(BIN / "agent"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_apply_inventory_destroy_against_moto(aws_mirror, moto_server, tmp_path):
    import boto3

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "key")],
                   check=True, timeout=30)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1", "INFERFLEET_TERRAFORM_DIR": str(copy_terraform(tmp_path / "tf")),
           "COLUMNS": "200"}
    env.pop("AWS_PROFILE", None)
    inv = tmp_path / "inventory.yml"
    common = ["--cloud", "aws", "--state-dir", str(tmp_path / "state"), "--inventory", str(inv)]
    t0 = time.monotonic()
    r = agent("infra", "provision", *common, "--node-count", "2", "--admin-cidrs", "203.0.113.7/32",
              "--ssh-public-key", str(tmp_path / "key.pub"), "--var", f"aws_endpoint_url={moto_server}",
              "--var", "detailed_monitoring=false", "--collector-url", "http://10.0.0.5:8080", "--yes", env=env)
    print(r.stdout[-3000:], r.stderr[-3000:])
    assert r.returncode == 0, r.stderr
    print(f"provision (init+plan+apply+inventory) took {time.monotonic() - t0:.1f} s")
    assert "Plan: " in r.stdout and "to add" in r.stdout  # the plan was shown

    ec2 = boto3.client("ec2", endpoint_url=moto_server, region_name="us-east-1",
                       aws_access_key_id="test", aws_secret_access_key="test")
    running = [i for res in ec2.describe_instances()["Reservations"] for i in res["Instances"]
               if i["State"]["Name"] == "running"]
    assert sorted(i["InstanceType"] for i in running) == ["g5.xlarge", "g5.xlarge"]
    sg = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["inferfleet-aws-nodes"]}])
    perms = sg["SecurityGroups"][0]["IpPermissions"]
    ssh = [p for p in perms if p.get("FromPort") == 22]
    assert [r["CidrIp"] for p in ssh for r in p["IpRanges"]] == ["203.0.113.7/32"]
    assert not [p for p in perms if p.get("FromPort") in (8000, 8001, 8002)]

    listed = json.loads(subprocess.run([str(BIN / "ansible-inventory"), "-i", str(inv), "--list"],
                                       capture_output=True, text=True, check=True, timeout=120).stdout)
    assert sorted(listed["inferfleet_nodes"]["hosts"]) == ["inferfleet-aws-1", "inferfleet-aws-2"]
    assert sorted(listed["cloud_aws"]["hosts"]) == sorted(listed["gpu_a10g"]["hosts"])
    hv = listed["_meta"]["hostvars"]["inferfleet-aws-1"]
    ips = {i["PublicIpAddress"] for i in running}
    assert hv["ansible_host"] in ips and hv["ansible_user"] == "ubuntu"
    assert hv["instance_type"] == "g5.xlarge" and hv["gpu"] == "A10G" and hv["price_per_hour"] == 1.006
    assert hv["cloud"] == "aws" and hv["region"] == "us-east-1" and hv["private_ip"].startswith("10.")
    assert hv["agent_collector_url"] == "http://10.0.0.5:8080"

    t0 = time.monotonic()
    r = agent("infra", "destroy", *common, "--yes", env=env)
    assert r.returncode == 0, r.stderr
    print(f"destroy took {time.monotonic() - t0:.1f} s")
    states = {i["State"]["Name"] for res in ec2.describe_instances()["Reservations"] for i in res["Instances"]}
    assert states == {"terminated"}
    assert not inv.exists()
    state = json.loads((tmp_path / "state" / "aws" / "terraform.tfstate").read_text())
    assert state["resources"] == []
