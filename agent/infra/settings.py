"""Fleet settings for provisioning, validated before Terraform runs.

The values come from ``fleet.env`` (through the Makefile) or `agent infra`
options; secrets never live here (see :mod:`agent.infra.credentials`)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import AgentError

CLOUDS = ("genesiscloud", "aws")
DEFAULT_CLOUD = "genesiscloud"


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def terraform_root() -> Path:
    if os.environ.get("INFERFLEET_TERRAFORM_DIR"):
        return Path(os.environ["INFERFLEET_TERRAFORM_DIR"])
    return repo_root() / "terraform"


def default_ssh_public_key() -> Path:
    ssh = Path.home() / ".ssh"
    for name in ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"):
        if (ssh / name).is_file():
            return ssh / name
    return ssh / "id_ed25519.pub"


@dataclass
class FleetSettings:
    cloud: str = DEFAULT_CLOUD
    node_count: int = 1
    instance_type: str | None = None
    region: str | None = None
    name_prefix: str | None = None
    admin_cidrs: list[str] = field(default_factory=list)
    triton_allowed_cidrs: list[str] = field(default_factory=list)
    ssh_public_key_file: Path | None = None
    extra_vars: dict[str, str] = field(default_factory=dict)
    state_dir: Path | None = None

    @property
    def config_dir(self) -> Path:
        """The root configuration `make provision` applies for this cloud."""
        return terraform_root() / "stacks" / self.cloud

    @property
    def work_dir(self) -> Path:
        """Local state, plugin cache, plan and variables of this cloud's fleet."""
        return (self.state_dir or repo_root() / ".state" / "terraform") / self.cloud

    def validate(self) -> FleetSettings:
        if self.cloud not in CLOUDS:
            raise AgentError(f"unknown cloud {self.cloud!r}: choose one of {', '.join(CLOUDS)}")
        if not isinstance(self.node_count, int) or self.node_count < 1:
            raise AgentError(f"node count must be a whole number >= 1, got {self.node_count!r}")
        if not self.admin_cidrs:
            raise AgentError(
                "ADMIN_CIDRS is empty: set the CIDR blocks allowed to reach SSH "
                "(e.g. ADMIN_CIDRS=203.0.113.7/32 in fleet.env); SSH is never opened to everyone by default"
            )
        for what, cidrs in (("ADMIN_CIDRS", self.admin_cidrs),
                            ("TRITON_ALLOWED_CIDRS", self.triton_allowed_cidrs)):
            for c in cidrs:
                try:
                    ipaddress.IPv4Network(c, strict=False)
                except ValueError:
                    raise AgentError(f"{what}: {c!r} is not an IPv4 CIDR block such as 203.0.113.7/32") from None
        if not self.config_dir.is_dir():
            raise AgentError(f"no Terraform configuration for {self.cloud} at {self.config_dir}")
        return self

    def ssh_public_key(self) -> str:
        path = self.ssh_public_key_file or default_ssh_public_key()
        try:
            key = Path(path).expanduser().read_text().strip()
        except OSError:
            raise AgentError(
                f"SSH public key {path} not found: create one with ssh-keygen -t ed25519 "
                "or set SSH_PUBLIC_KEY_FILE"
            ) from None
        if not key.startswith(("ssh-ed25519 ", "ssh-rsa ", "ecdsa-sha2-")):
            raise AgentError(f"{path} is not an OpenSSH public key")
        return key

    def tf_vars(self) -> dict:
        """Terraform variables of the cloud's root configuration (only the set ones)."""
        out: dict = {
            "node_count": self.node_count,
            "admin_cidrs": list(self.admin_cidrs),
            "triton_allowed_cidrs": list(self.triton_allowed_cidrs),
            "ssh_public_key": self.ssh_public_key(),
        }
        for k in ("instance_type", "region", "name_prefix"):
            if getattr(self, k):
                out[k] = getattr(self, k)
        out.update(self.extra_vars)
        return out
