"""NVIDIA's management library (NVML, through ``nvidia-ml-py``): GPU facts and samples.

Used instead of parsing ``nvidia-smi`` output wherever NVML loads (a node with
the driver installed); every function returns None where it does not (no
driver, no GPU, no ``pynvml``), so callers fall back to ``nvidia-smi`` or to
CPU telemetry. ``reading`` turns one NVML sample into plain numbers; it is
kept separate from the NVML calls so that its arithmetic (milliwatts, bytes,
percent) is tested on recorded values where no GPU exists."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GpuSample:
    """One NVML reading of one GPU, in the units the result document uses."""

    utilization_pct: float
    memory_used_mb: float
    power_w: float | None
    sm_clock_mhz: float | None
    temperature_c: float | None


def reading(utilization_gpu: int, memory_used_bytes: int, power_mw: int | None,
            sm_clock_mhz: int | None, temperature_c: int | None) -> GpuSample:
    """NVML's raw values (``nvmlDeviceGetUtilizationRates().gpu`` in %, memory in bytes,
    ``nvmlDeviceGetPowerUsage`` in milliwatts, clocks in MHz, temperature in °C)."""
    return GpuSample(
        utilization_pct=float(utilization_gpu),
        memory_used_mb=memory_used_bytes / 2**20,
        power_w=power_mw / 1000.0 if power_mw is not None else None,
        sm_clock_mhz=float(sm_clock_mhz) if sm_clock_mhz is not None else None,
        temperature_c=float(temperature_c) if temperature_c is not None else None,
    )


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@functools.cache
def _nvml():  # noqa: ANN202
    """The initialised ``pynvml`` module, or None (no package, no driver, no GPU)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        if pynvml.nvmlDeviceGetCount() < 1:
            return None
        return pynvml
    except Exception:  # ImportError, NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded, ...
        return None


def available() -> bool:
    return _nvml() is not None


def facts() -> dict[str, str] | None:
    """First GPU's name, driver, compute capability and the GPU count (the keys
    ``agent.facts.nvidia_smi`` returns), or None without NVML."""
    nv = _nvml()
    if nv is None:
        return None
    try:
        h = nv.nvmlDeviceGetHandleByIndex(0)
        major, minor = nv.nvmlDeviceGetCudaComputeCapability(h)
        return {"name": _text(nv.nvmlDeviceGetName(h)), "driver": _text(nv.nvmlSystemGetDriverVersion()),
                "compute_cap": f"{major}.{minor}", "count": str(nv.nvmlDeviceGetCount())}
    except Exception:
        return None


def _optional(fn, *args):  # noqa: ANN001, ANN202
    try:
        return fn(*args)
    except Exception:  # NVMLError_NotSupported on some boards (power, clocks)
        return None


def sample(index: int = 0) -> GpuSample | None:
    """One reading of GPU ``index`` now, or None without NVML."""
    nv = _nvml()
    if nv is None:
        return None
    try:
        h = nv.nvmlDeviceGetHandleByIndex(index)
        util = nv.nvmlDeviceGetUtilizationRates(h).gpu
        mem = nv.nvmlDeviceGetMemoryInfo(h).used
    except Exception:
        return None
    return reading(util, mem, _optional(nv.nvmlDeviceGetPowerUsage, h),
                   _optional(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM),
                   _optional(nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU))
