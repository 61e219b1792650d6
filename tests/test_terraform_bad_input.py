"""Bad input to `agent infra`: one-line error, non-zero exit, nothing created
(no Terraform run, no state directory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tf_support import ROOT

pytestmark = pytest.mark.terraform
BIN = Path(sys.executable).parent


@pytest.fixture
def key(tmp_path):
    p = tmp_path / "id.pub"
    p.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJx3f2wR0m2TqP1v9a1y0Zb5O6eYcXk3s1o8p7B4d5e6 t\n")
    return p


CASES = {
    "zero nodes": (["--cloud", "aws", "-n", "0", "--admin-cidrs", "10.0.0.0/8"], "node count must be"),
    "negative nodes": (["--cloud", "aws", "-n", "-2", "--admin-cidrs", "10.0.0.0/8"], "node count must be"),
    "empty admin cidrs": (["--cloud", "aws", "-n", "1", "--admin-cidrs", ""], "ADMIN_CIDRS is empty"),
    "bad cidr": (["--cloud", "aws", "--admin-cidrs", "10.0.0.300/8"], "not an IPv4 CIDR"),
    "unknown cloud": (["--cloud", "azure", "--admin-cidrs", "10.0.0.0/8"], "unknown cloud 'azure'"),
    "missing genesis token": (["--cloud", "genesiscloud", "--admin-cidrs", "10.0.0.0/8"], "GENESISCLOUD_TOKEN is not set"),
    "missing aws credentials": (["--cloud", "aws", "--admin-cidrs", "10.0.0.0/8"], "no AWS credentials"),
}


@pytest.mark.parametrize("command", ["plan", "provision"])
@pytest.mark.parametrize("case", list(CASES))
def test_refused_before_terraform(case, command, tmp_path, key):
    args, message = CASES[case]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and k != "GENESISCLOUD_TOKEN"}
    state = tmp_path / "state"
    r = subprocess.run([str(BIN / "agent"), "infra", command, *args, "--ssh-public-key", str(key),
                        "--state-dir", str(state), "--yes"][: None if command == "provision" else -1],
                       capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert message in lines[0]
    assert not state.exists(), "nothing may be written before the input is valid"


def test_missing_ssh_key(tmp_path):
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}
    r = subprocess.run([str(BIN / "agent"), "infra", "plan", "--cloud", "aws", "--admin-cidrs", "10.0.0.0/8",
                        "--ssh-public-key", str(tmp_path / "nope.pub"), "--state-dir", str(tmp_path / "s")],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode != 0 and "SSH public key" in r.stderr
    assert not (tmp_path / "s").exists()


def test_destroy_without_state(tmp_path):
    r = subprocess.run([str(BIN / "agent"), "infra", "destroy", "--cloud", "aws", "--state-dir", str(tmp_path),
                        "--yes"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "nothing to destroy" in r.stderr
