"""What a Triton server runs with (:class:`ServerSettings`, the flags both runtimes
share) and what ``agent serve start`` records about it in its state directory."""

from __future__ import annotations

import json
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agent.defaults import TRITON_RELEASE
from agent.errors import AgentError
from agent.triton.repo import repo_models

DEFAULT_IMAGE = f"nvcr.io/nvidia/tritonserver:{TRITON_RELEASE}-py3"
DEFAULT_CONTAINER_NAME = "inferfleet-triton"
PID_FILE = "tritonserver.pid"
STATE_FILE = "server.json"
LOG_FILE = "tritonserver.log"
LOADED_FILE = "loaded.json"
RUNTIMES = ("process", "container")
RUNTIME_ALIASES = {"native": "process"}  # the runtime's name before 0.2 (still read from state files)


def runtime_name(name: str) -> str:
    """``process`` or ``container`` (``native`` is the old name of ``process``)."""
    name = RUNTIME_ALIASES.get(name, name)
    if name not in RUNTIMES:
        raise AgentError(f"unknown --runtime {name!r}: use process or container")
    return name


@dataclass
class ServerSettings:
    repo: Path
    runtime: str = "process"  # process (a tritonserver binary) | container (NGC image)
    bind: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    state_dir: Path = Path(".state/triton")
    tritonserver: Path | None = None  # process: binary (default: the bundled one)
    backend_dir: Path | None = None  # process: default <state_dir>/backends for the bundled binary
    image: str = DEFAULT_IMAGE  # container
    engine: str | None = None  # container: docker | podman (default: whichever is installed)
    container_name: str = DEFAULT_CONTAINER_NAME
    log_verbose: int = 0
    extra_args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.runtime = runtime_name(self.runtime)

    @property
    def http_url(self) -> str:
        host = "127.0.0.1" if self.bind in ("0.0.0.0", "") else self.bind
        return f"http://{host}:{self.http_port}"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / PID_FILE

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    @property
    def log_file(self) -> Path:
        return self.state_dir / LOG_FILE

    def ports(self) -> dict[str, int]:
        return {"http": self.http_port, "grpc": self.grpc_port, "metrics": self.metrics_port}


def settings_dict(s: ServerSettings) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(s).items()}


def triton_flags(s: ServerSettings, repo: str, bind: str | None) -> list[str]:
    """The tritonserver flags both runtimes share."""
    flags = [
        f"--model-repository={repo}",
        "--model-control-mode=explicit",
        "--exit-on-error=true",
        # health/ready answers for the server; every model's readiness is checked by name
        "--strict-readiness=false",
        f"--http-port={s.http_port}",
        f"--grpc-port={s.grpc_port}",
        f"--metrics-port={s.metrics_port}",
        "--allow-metrics=true",
        "--allow-cpu-metrics=true",  # nv_cpu_utilization / nv_cpu_memory_used_bytes beside nv_gpu_*
        "--metrics-config=summary_latencies=true",  # nv_inference_*_summary_us quantiles (p99 in Grafana)
        "--exit-timeout-secs=5",
        f"--log-verbose={s.log_verbose}",
    ]
    if bind is not None:
        flags += [f"--http-address={bind}", f"--grpc-address={bind}", f"--metrics-address={bind}"]
    return flags + list(s.extra_args)


# ------------------------------------------------------------------- checks
def check_ports_free(s: ServerSettings) -> None:
    seen: dict[int, str] = {}
    for opt, port in (("--http-port", s.http_port), ("--grpc-port", s.grpc_port), ("--metrics-port", s.metrics_port)):
        if not 0 < port < 65536:
            raise AgentError(f"{opt} {port} is not a valid port")
        if port in seen:
            raise AgentError(f"{opt} and {seen[port]} are both {port}: every port must differ")
        seen[port] = opt
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((s.bind, port))
            except OSError as e:
                raise AgentError(f"port {port} ({opt}) on {s.bind} is already in use or not bindable: {e.strerror}") from None


def validate_repo(repo: Path) -> list[str]:
    repo = Path(repo)
    if not repo.is_dir():
        raise AgentError(f"model repository {repo} does not exist (write one with `agent repo`)")
    models = repo_models(repo)
    if not models:
        raise AgentError(f"{repo} is not a Triton model repository: no <model>/config.pbtxt inside")
    return models


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


# -------------------------------------------------------------------- state
def read_state(state_dir: Path) -> dict | None:
    """What ``agent serve start`` recorded in ``state_dir`` (ports, pid, ...), or None."""
    try:
        state = json.loads((Path(state_dir) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(state, dict) and state.get("runtime") in RUNTIME_ALIASES:
        state["runtime"] = RUNTIME_ALIASES[state["runtime"]]
    return state


def own_process(state: dict):
    """The psutil.Process recorded in the state, if it is still that tritonserver."""
    import psutil

    try:
        p = psutil.Process(int(state["pid"]))
        if abs(p.create_time() - float(state["create_time"])) > 1.0:
            return None  # pid reused
        if "tritonserver" not in " ".join([p.name(), *p.cmdline()[:1]]):
            return None
        return p
    except (psutil.Error, KeyError, ValueError, TypeError):
        return None


def serving_pid(state: dict) -> int | None:
    """The pid recorded in ``state`` while it is still that tritonserver (not a reused pid)."""
    p = own_process(state)
    return p.pid if p is not None else None
