"""Agent configuration: the node's identity and where results go.

Read from a TOML file (``$INFERFLEET_CONFIG``, else ``/etc/inferfleet/agent.toml``
when it exists), then overridden by ``INFERFLEET_*`` environment variables.
Secrets are never stored here: the collector token is read from the
environment variable named by ``collector_token_env``."""

from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from agent.errors import AgentError
from agent.schema import Name

DEFAULT_CONFIG = Path("/etc/inferfleet/agent.toml")
DEFAULT_TOKEN_ENV = "INFERFLEET_COLLECTOR_TOKEN"


def default_state_dir() -> Path:
    if os.environ.get("INFERFLEET_STATE_DIR"):
        return Path(os.environ["INFERFLEET_STATE_DIR"])
    if os.geteuid() == 0 and Path("/var/lib").is_dir():
        return Path("/var/lib/inferfleet")
    return Path.home() / ".local" / "state" / "inferfleet"


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node_name: Name = socket.gethostname()  # letters, digits, ".", "_", "-" (the collector checks it)
    cloud: str | None = None
    region: str | None = None
    instance_type: str | None = None
    price_per_hour: float | None = None
    labels: dict[str, str] = {}
    collector_url: str | None = None
    collector_token_env: str = DEFAULT_TOKEN_ENV
    state_dir: Path = default_state_dir()
    triton_version: str | None = None
    # written by the Ansible roles: the installed driver/CUDA/cuDNN/TensorRT/Triton versions
    stack_file: Path = Path("/etc/inferfleet/stack.json")

    @property
    def spool_dir(self) -> Path:
        return self.state_dir / "spool"


_ENV = {
    "node_name": "INFERFLEET_NODE_NAME",
    "cloud": "INFERFLEET_CLOUD",
    "region": "INFERFLEET_REGION",
    "instance_type": "INFERFLEET_INSTANCE_TYPE",
    "price_per_hour": "INFERFLEET_PRICE_PER_HOUR",
    "collector_url": "INFERFLEET_COLLECTOR_URL",
    "collector_token_env": "INFERFLEET_COLLECTOR_TOKEN_ENV",
    "state_dir": "INFERFLEET_STATE_DIR",
    "triton_version": "INFERFLEET_TRITON_VERSION",
    "stack_file": "INFERFLEET_STACK_FILE",
}


def load_config(path: Path | None = None) -> AgentConfig:
    if path is None and os.environ.get("INFERFLEET_CONFIG"):
        path = Path(os.environ["INFERFLEET_CONFIG"])
    data: dict = {}
    if path is not None or DEFAULT_CONFIG.is_file():
        path = path or DEFAULT_CONFIG
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError as e:
            raise AgentError(f"config file {path} does not exist") from e
        except (tomllib.TOMLDecodeError, OSError) as e:
            raise AgentError(f"config file {path} is not valid TOML: {e}") from e
    for field, var in _ENV.items():
        if os.environ.get(var):
            data[field] = os.environ[var]
    try:
        return AgentConfig(**data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise AgentError(f"config {path or 'environment'}: {where}: {first['msg']}") from e
