"""Helpers shared by the Terraform tests (not a test module)."""

from __future__ import annotations

import shutil
from pathlib import Path

from testing.ports import free_port  # noqa: F401  (re-exported for the tests)

ROOT = Path(__file__).resolve().parents[1]
TERRAFORM = ROOT / "terraform"
MODULES = {"aws": TERRAFORM / "modules" / "aws-gpu-nodes",
           "genesiscloud": TERRAFORM / "modules" / "genesiscloud-gpu-nodes"}
STACKS = {"aws": TERRAFORM / "stacks" / "aws",
          "genesiscloud": TERRAFORM / "stacks" / "genesiscloud"}
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJx3f2wR0m2TqP1v9a1y0Zb5O6eYcXk3s1o8p7B4d5e6 test"


def copy_terraform(dst: Path) -> Path:
    """A private copy of terraform/ (modules + stacks), without local state."""
    shutil.copytree(TERRAFORM, dst, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*",
                                                                   ".terraform.lock.hcl"))
    return dst


