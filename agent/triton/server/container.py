"""The ``container`` runtime: NGC ``tritonserver:<release>-py3`` with Docker or Podman
and the NVIDIA runtime (GPU nodes): every GPU, the repository mounted read-only, the
ports published on the bind address only."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from agent.errors import AgentError
from agent.triton.server.runtime import Runtime
from agent.triton.server.settings import ServerSettings, triton_flags

CONTAINER_REPO = "/models"


def container_engine(preferred: str | None = None) -> str:
    for name in [preferred] if preferred else ["docker", "podman"]:
        if name not in ("docker", "podman"):
            raise AgentError(f"unknown container engine {name!r}: use docker or podman")
        if shutil.which(name):
            return name
    raise AgentError(
        f"{preferred or 'docker or podman'} not found: the container runtime needs a container engine "
        "with the NVIDIA runtime (use --runtime process on CPU machines)"
    )


def container_command(s: ServerSettings, engine: str, detach: bool = True) -> list[str]:
    """``docker|podman run`` of the NGC Triton image: all GPUs, repository read-only,
    ports published on ``s.bind`` only."""
    gpus = ["--gpus", "all"] if engine == "docker" else ["--device", "nvidia.com/gpu=all"]
    cmd = [engine, "run", "-d" if detach else "--rm", "--name", s.container_name, *gpus,
           "--shm-size=1g", "--ulimit", "memlock=-1", "--ulimit", "stack=67108864"]
    for port in (s.http_port, s.grpc_port, s.metrics_port):
        cmd += ["-p", f"{s.bind}:{port}:{port}"]
    cmd += ["-v", f"{Path(s.repo).resolve()}:{CONTAINER_REPO}:ro", s.image, "tritonserver"]
    # inside the container Triton listens on all its interfaces; the host side binds s.bind
    return cmd + triton_flags(s, CONTAINER_REPO, None)


class ContainerRuntime(Runtime):
    name = "container"

    def launch(self, s: ServerSettings) -> dict:
        engine = container_engine(s.engine)
        cmd = container_command(s, engine)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise AgentError(f"{engine} run failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
        return {"engine": engine, "container": s.container_name, "image": s.image, "command": cmd}

    def alive(self, state: dict) -> bool:
        q = subprocess.run([state["engine"], "inspect", "-f", "{{.State.Running}}", state["container"]],
                           capture_output=True, text=True)
        return q.stdout.strip() == "true"

    def log_tail(self, s: ServerSettings, state: dict) -> str:
        q = subprocess.run([state["engine"], "logs", "--tail", "15", state["container"]],
                           capture_output=True, text=True)
        return (q.stdout + q.stderr).strip()

    def stop(self, s: ServerSettings, state: dict, timeout: float) -> bool:
        r = subprocess.run([state["engine"], "rm", "-f", "-t", str(int(timeout)), state["container"]],
                           capture_output=True, text=True)
        return r.returncode == 0

    def foreground_command(self, s: ServerSettings) -> tuple[list[str], dict[str, str]]:
        return container_command(s, container_engine(s.engine), detach=False), dict(os.environ)
