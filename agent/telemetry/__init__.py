"""Telemetry beside every measurement: Triton's Prometheus metrics (``triton_metrics``),
the device through NVML or psutil (``device``, ``nvml``)."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Sampler:
    """A thread calling ``sample`` every ``interval`` seconds between ``start`` and ``stop``."""

    def __init__(self, sample: Callable[[], None], interval: float, name: str) -> None:
        self.sample, self.interval, self.name = sample, interval, name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True, name=self.name)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
