"""What the device did while a result was measured: NVML on GPU nodes, psutil on CPU.

A :class:`DeviceRecorder` belongs to one result. Every ``with recorder:`` span
(one measurement window, or several interleaved ones) runs a sampling thread
for its duration; the spans add up, so windows of other engines measured in
between (interleaved A/B benchmarks) are not counted. ``result()`` gives the
schema's :class:`~agent.schema.DeviceTelemetry`:

- GPU (NVML available and the engine on CUDA): utilisation, power and SM clock
  are the means of the samples, memory used and temperature their peaks;
  power also keeps its peak.
- CPU: the CPU time (user + system) that the processes spent during the spans
  divided by the spans' wall time — exact, not sampled — in percent of one
  core (200 % = two cores busy), and the peak resident set size, sampled. The
  processes are this one (in-process engines) or a server's process tree
  (``pids``: tritonserver and its python-backend stubs)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import psutil

from agent.schema import DeviceTelemetry
from agent.telemetry import Sampler, nvml

INTERVAL_S = 0.1


def _tree(pids: Iterable[int]) -> list[psutil.Process]:
    procs: list[psutil.Process] = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            procs += [p, *p.children(recursive=True)]
        except psutil.Error:
            continue
    return procs


def _sum(procs: list[psutil.Process], read: Callable[[psutil.Process], float]) -> float:
    """``read`` summed over the processes still alive."""
    total = 0.0
    for p in procs:
        try:
            total += read(p)
        except psutil.Error:
            continue
    return total


def _cpu_seconds(procs: list[psutil.Process]) -> float:
    return _sum(procs, lambda p: sum(p.cpu_times()[:2]))  # user + system


def _rss(procs: list[psutil.Process]) -> int:
    return int(_sum(procs, lambda p: p.memory_info().rss))


class DeviceRecorder:
    """Samples during ``with`` spans; ``gpu``: sample GPU ``gpu_index`` with NVML when it loads."""

    def __init__(self, gpu: bool = False, gpu_index: int = 0, pids: Iterable[int] | None = None,
                 interval_s: float = INTERVAL_S) -> None:
        self.use_nvml = gpu and nvml.available()
        self.gpu_index = gpu_index
        self.pids = list(pids) if pids is not None else [psutil.Process().pid]
        self.interval = interval_s
        self.gpu: list[nvml.GpuSample] = []
        self.rss_peak = 0
        self.cpu_s = 0.0
        self.wall_s = 0.0
        self.samples = 0
        self._sampler = Sampler(self._take, interval_s, "device-telemetry")
        self._procs: list[psutil.Process] = []
        self._t0 = self._c0 = 0.0

    def _take(self) -> None:
        if self.use_nvml:
            s = nvml.sample(self.gpu_index)
            if s is not None:
                self.gpu.append(s)
                self.samples += 1
        else:
            self.rss_peak = max(self.rss_peak, _rss(self._procs))
            self.samples += 1

    def __enter__(self) -> DeviceRecorder:
        if not self.use_nvml:
            self._procs = _tree(self.pids)
            self._c0 = _cpu_seconds(self._procs)
        self._t0 = time.perf_counter()
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sampler.stop()
        self._take()  # a span shorter than the interval still gets one sample
        self.wall_s += time.perf_counter() - self._t0
        if not self.use_nvml:
            self.cpu_s += max(0.0, _cpu_seconds(self._procs) - self._c0)

    def result(self) -> DeviceTelemetry | None:
        if self.samples == 0 or self.wall_s <= 0:
            return None
        return summarize_gpu(self.gpu, self.interval) if self.use_nvml else DeviceTelemetry(
            source="psutil", samples=self.samples, interval_ms=self.interval * 1e3,
            cpu_utilization_pct=round(self.cpu_s / self.wall_s * 100, 1),
            rss_mb=round(self.rss_peak / 2**20, 1))


def combined(recorders: list[DeviceRecorder]) -> DeviceTelemetry | None:
    """One DeviceTelemetry over several recorders' spans (e.g. the windows a measurement used)."""
    if not recorders:
        return None
    first = recorders[0]
    total = DeviceRecorder(gpu=first.use_nvml, gpu_index=first.gpu_index, pids=first.pids, interval_s=first.interval)
    for r in recorders:
        total.gpu += r.gpu
        total.rss_peak = max(total.rss_peak, r.rss_peak)
        total.cpu_s += r.cpu_s
        total.wall_s += r.wall_s
        total.samples += r.samples
    return total.result()


def summarize_gpu(samples: list[nvml.GpuSample], interval_s: float) -> DeviceTelemetry | None:
    """Means of utilisation, power and clock; peaks of memory, power and temperature."""
    if not samples:
        return None

    def mean(values: list[float | None]) -> float | None:
        v = [x for x in values if x is not None]
        return round(sum(v) / len(v), 2) if v else None

    def peak(values: list[float | None]) -> float | None:
        v = [x for x in values if x is not None]
        return round(max(v), 2) if v else None

    return DeviceTelemetry(
        source="nvml", samples=len(samples), interval_ms=interval_s * 1e3,
        gpu_utilization_pct=mean([s.utilization_pct for s in samples]),
        gpu_memory_used_mb=peak([s.memory_used_mb for s in samples]),
        gpu_power_w=mean([s.power_w for s in samples]),
        gpu_power_max_w=peak([s.power_w for s in samples]),
        sm_clock_mhz=mean([s.sm_clock_mhz for s in samples]),
        gpu_temperature_c=peak([s.temperature_c for s in samples]),
    )
