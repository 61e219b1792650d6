"""Measurement windows repeated until stable, as perf_analyzer does.

A *window* runs requests for ``window_seconds`` (or a fixed number of
requests) and yields per-request latencies and the window's wall time. We
keep measuring until the last ``STABLE_WINDOWS`` windows have throughputs
within ``stability_pct`` of their mean (and p50 latencies likewise), or
``max_windows`` is reached; statistics are computed over those last windows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from agent.schema import LatencyStats

STABLE_WINDOWS = 3


@dataclass
class Window:
    latencies_s: list[float]
    elapsed_s: float

    @property
    def requests(self) -> int:
        return len(self.latencies_s)


@dataclass
class Measurement:
    latency_ms: LatencyStats
    throughput_ips: float  # samples per second
    requests: int
    windows: int
    stable: bool
    cv_pct: float  # coefficient of variation of the used windows' throughputs, percent


def latency_stats(latencies_s: list[float]) -> LatencyStats:
    ms = np.asarray(latencies_s, dtype=np.float64) * 1e3
    p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
    return LatencyStats(
        p50=float(p50), p90=float(p90), p95=float(p95), p99=float(p99),
        mean=float(ms.mean()), min=float(ms.min()), max=float(ms.max()), std=float(ms.std()),
    )


def coefficient_of_variation(values: list[float]) -> float:
    """Sample standard deviation / mean, in percent (0 for fewer than two values)."""
    if len(values) < 2:
        return 0.0
    a = np.asarray(values, dtype=np.float64)
    mean = float(a.mean())
    return round(float(a.std(ddof=1)) / mean * 100, 2) if mean > 0 else 0.0


def _within(values: list[float], pct: float) -> bool:
    mean = sum(values) / len(values)
    return mean > 0 and all(abs(v - mean) <= mean * pct / 100 for v in values)


def measure_until_stable(
    run_window: Callable[[], Window],
    batch_size: int,
    stability_pct: float,
    max_windows: int,
) -> Measurement:
    windows: list[Window] = []
    stable = False
    while len(windows) < max_windows:
        w = run_window()
        if w.requests == 0:
            continue
        windows.append(w)
        if len(windows) >= STABLE_WINDOWS:
            last = windows[-STABLE_WINDOWS:]
            tput = [x.requests / x.elapsed_s for x in last]
            p50 = [float(np.median(x.latencies_s)) for x in last]
            if _within(tput, stability_pct) and _within(p50, stability_pct):
                stable = True
                break
    used = windows[-STABLE_WINDOWS:]
    lat = [x for w in used for x in w.latencies_s]
    elapsed = sum(w.elapsed_s for w in used)
    return Measurement(
        cv_pct=coefficient_of_variation([w.requests / w.elapsed_s for w in used]),
        latency_ms=latency_stats(lat),
        throughput_ips=len(lat) * batch_size / elapsed,
        requests=len(lat),
        windows=len(windows),
        stable=stable,
    )
