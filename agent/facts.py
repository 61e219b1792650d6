"""Probe what a node is: CPU, memory, GPU, driver and library versions.

Cheap and import-light: versions come from package metadata, the GPU from
``nvidia-smi`` when it exists, so probing never initialises CUDA."""

from __future__ import annotations

import functools
import json
import os
import platform
import shutil
import socket
import subprocess
from importlib import metadata
from pathlib import Path

import psutil

from agent import __version__
from agent.config import AgentConfig
from agent.schema import NodeFacts, ToolVersions


def pkg_version(*names: str) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _os_name() -> str | None:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME")
    except OSError:
        return platform.platform()


@functools.cache
def gpu_facts() -> dict[str, str] | None:
    """First GPU's name, driver, compute capability and the GPU count, or None without a
    GPU: from NVML where it loads, else from ``nvidia-smi``'s CSV output."""
    from agent.telemetry import nvml

    return nvml.facts() or nvidia_smi()


def nvidia_smi() -> dict[str, str] | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,driver_version,compute_cap,count", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    if not out:
        return None
    name, driver, cc, count = [x.strip() for x in out[0].split(",")]
    return {"name": name, "driver": driver, "compute_cap": cc, "count": count}


def cuda_versions() -> tuple[str | None, str | None]:
    """(CUDA, cuDNN) as torch was built with them, when torch sees a GPU."""
    try:
        import torch
    except ImportError:
        return None, None
    if not torch.cuda.is_available():
        return None, None
    cudnn = torch.backends.cudnn.version()
    return torch.version.cuda, str(cudnn) if cudnn else None


def tool_versions(probe_cuda: bool = True) -> ToolVersions:
    gpu = gpu_facts()
    cuda, cudnn = cuda_versions() if (probe_cuda and gpu) else (None, None)
    return ToolVersions(
        torch=pkg_version("torch"),
        torchvision=pkg_version("torchvision"),
        onnx=pkg_version("onnx"),
        onnxruntime=pkg_version("onnxruntime", "onnxruntime-gpu"),
        tensorrt=pkg_version("tensorrt", "tensorrt-cu12", "tensorrt-cu13"),
        cuda=cuda,
        cudnn=cudnn,
        gpu_name=gpu["name"] if gpu else None,
        gpu_compute_capability=gpu["compute_cap"] if gpu else None,
    )


STACK_KEYS = ("driver_version", "cuda_version", "cudnn_version", "tensorrt_version", "triton_version")


def stack_versions(path: Path) -> dict[str, str]:
    """Versions of the node stack as the Ansible roles installed them.

    The roles write ``/etc/inferfleet/stack.json`` (keys: ``STACK_KEYS``); it is
    the only source on CPU nodes, where CUDA libraries are installed but not
    loaded, and it is what an upgrade by playbook rerun changes."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: str(v) for k, v in data.items() if k in STACK_KEYS and v not in (None, "")}


def node_facts(config: AgentConfig) -> NodeFacts:
    gpu = gpu_facts()
    tools = tool_versions()
    stack = stack_versions(config.stack_file)
    return NodeFacts(
        node_name=config.node_name,
        hostname=socket.gethostname(),
        cloud=config.cloud,
        region=config.region,
        instance_type=config.instance_type,
        price_per_hour=config.price_per_hour,
        labels=config.labels,
        os=_os_name(),
        cpu=_cpu_model(),
        cpu_count=os.cpu_count(),
        memory_gb=round(psutil.virtual_memory().total / 2**30, 1),
        gpu_name=tools.gpu_name,
        gpu_count=int(gpu["count"]) if gpu else 0,
        gpu_compute_capability=tools.gpu_compute_capability,
        driver_version=gpu["driver"] if gpu else stack.get("driver_version"),
        cuda_version=tools.cuda or stack.get("cuda_version"),
        cudnn_version=tools.cudnn or stack.get("cudnn_version"),
        tensorrt_version=tools.tensorrt or stack.get("tensorrt_version"),
        triton_version=config.triton_version or stack.get("triton_version"),
        torch_version=tools.torch,
        torchvision_version=tools.torchvision,
        onnxruntime_version=tools.onnxruntime,
        python_version=platform.python_version(),
        agent_version=__version__,
    )
