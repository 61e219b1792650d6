"""Measurement windows: repeated until stable, or interleaved across formats.

A *window* runs requests for ``window_seconds`` (or a fixed number of
requests) and yields per-request latencies and the window's wall time.

Absolute figures (:func:`measure_until_stable`, as perf_analyzer does): keep
measuring until the last ``STABLE_WINDOWS`` windows have throughputs within
``stability_pct`` of their mean (and p50 latencies likewise), or
``max_windows`` is reached; statistics are computed over those last windows,
``cv_pct`` is their throughputs' coefficient of variation and ``stable`` says
whether they passed the test.

Ratios (:func:`measure_interleaved` + :func:`paired_ratio`): several formats
take one window each per *round*, in forward order on even rounds and reverse
order on odd ones (A B C, C B A, ...: a linear drift of the machine's load
biases a ratio one way in one round and the other way in the next). Each
round pairs an engine's throughput with the baseline's from the same round;
the speedup is the geometric mean of those per-round ratios, with a 95 %
Student-t interval on their logarithms. A slowly changing load multiplies
both windows of a round alike, so it cancels out of the ratio, while it does
not cancel between measurements taken minutes apart. Geometric mean rather
than median: ratios are multiplicative (log scale is symmetric: 2× and 0.5×
are equally far from 1), the t-interval belongs to the mean of the logs, and
with 3–8 rounds a median moves in coarse steps and has no interval to speak
of; one disturbed round widens the interval instead of hiding."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from agent.schema import LatencyStats

STABLE_WINDOWS = 3
# Student-t 97.5 % quantiles for 1..30 degrees of freedom (two-sided 95 % interval).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


@dataclass
class Window:
    latencies_s: list[float]
    elapsed_s: float

    @property
    def requests(self) -> int:
        return len(self.latencies_s)

    @property
    def throughput(self) -> float:
        """Requests per second (multiply by the batch size for samples per second)."""
        return self.requests / self.elapsed_s


@dataclass
class Measurement:
    latency_ms: LatencyStats
    throughput_ips: float  # samples per second
    requests: int
    windows: int
    stable: bool
    cv_pct: float  # coefficient of variation of the used windows' throughputs, percent


@dataclass
class PairedRatio:
    """Geometric mean of paired ratios a/b with its 95 % interval (None below 2 pairs)."""

    estimate: float
    low: float | None
    high: float | None
    pairs: int


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


def is_stable(windows: list[Window], stability_pct: float) -> bool:
    """The last STABLE_WINDOWS windows agree within stability_pct (throughput and p50)."""
    if len(windows) < STABLE_WINDOWS:
        return False
    last = windows[-STABLE_WINDOWS:]
    return (_within([w.throughput for w in last], stability_pct)
            and _within([float(np.median(w.latencies_s)) for w in last], stability_pct))


def summarize(windows: list[Window], batch_size: int, stable: bool) -> Measurement:
    """Statistics over the last STABLE_WINDOWS windows (all of them when fewer)."""
    used = windows[-STABLE_WINDOWS:]
    lat = [x for w in used for x in w.latencies_s]
    return Measurement(
        cv_pct=coefficient_of_variation([w.throughput for w in used]),
        latency_ms=latency_stats(lat),
        throughput_ips=len(lat) * batch_size / sum(w.elapsed_s for w in used),
        requests=len(lat),
        windows=len(windows),
        stable=stable,
    )


def measure_until_stable(
    run_window: Callable[[], Window],
    batch_size: int,
    stability_pct: float,
    max_windows: int,
) -> Measurement:
    windows: list[Window] = []
    while len(windows) < max_windows:
        w = run_window()
        if w.requests == 0:
            continue
        windows.append(w)
        if is_stable(windows, stability_pct):
            break
    return summarize(windows, batch_size, is_stable(windows, stability_pct))


def measure_interleaved(
    run_windows: dict[str, Callable[[], Window]],
    stability_pct: float,
    max_windows: int,
    rounds: int | None = None,
) -> dict[str, list[Window]]:
    """One window per format per round, counterbalanced order; every format's windows.

    ``rounds`` given: exactly that many rounds. Otherwise rounds continue until
    every format is stable (:func:`is_stable`) or ``max_windows`` rounds were run."""
    names = list(run_windows)
    windows: dict[str, list[Window]] = {n: [] for n in names}
    limit = rounds or max_windows
    for i in range(limit):
        for n in (names if i % 2 == 0 else reversed(names)):
            w = run_windows[n]()
            while w.requests == 0:
                w = run_windows[n]()
            windows[n].append(w)
        if rounds is None and all(is_stable(ws, stability_pct) for ws in windows.values()):
            break
    return windows


def t975(df: int) -> float:
    """Two-sided 95 % Student-t quantile (Cornish-Fisher approximation above 30 df)."""
    return _T975[df - 1] if df <= len(_T975) else 1.95996 + 2.3723 / df + 2.8226 / df**2


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> PairedRatio:
    """exp(mean(log(a_i / b_i))) and the t-interval on the log ratios, back-transformed."""
    logs = np.log(np.asarray(a, dtype=np.float64) / np.asarray(b, dtype=np.float64))
    n, mean = len(logs), float(logs.mean())
    if n < 2:
        return PairedRatio(math.exp(mean), None, None, n)
    half = t975(n - 1) * float(logs.std(ddof=1)) / math.sqrt(n)
    return PairedRatio(math.exp(mean), math.exp(mean - half), math.exp(mean + half), n)
