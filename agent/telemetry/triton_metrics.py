"""Triton's Prometheus endpoint (``/metrics`` on the metrics port) during a measurement.

The text is parsed with ``prometheus_client``'s parser. A
:class:`ServerMetricsRecorder` belongs to one served result: every ``with``
span (a measurement window) reads the model's counters at its start and end
and adds the difference; a thread scrapes the gauges during the span. Its
``result()`` is the schema's :class:`~agent.schema.ServerMetrics`:

- per-model counters (``nv_inference_request_success``, ``_failure``,
  ``nv_inference_count``, ``nv_inference_exec_count`` and the cumulative
  ``*_duration_us``) as deltas over the spans; the durations divided by the
  successful requests give the per-request split (queue, compute input /
  infer / output, end to end) — the server's own view, to hold against the
  client's latency;
- gauges (``nv_gpu_utilization``, ``nv_gpu_memory_used_bytes``,
  ``nv_gpu_power_usage`` per GPU; ``nv_cpu_utilization``,
  ``nv_cpu_memory_used_bytes`` with ``--allow-cpu-metrics``) as means over the
  scrapes, GPUs averaged (utilisation) or summed (memory, power). Triton
  refreshes them every ``--metrics-interval-ms`` (2 s by default), so a span
  shorter than that may see one value."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import httpx
from prometheus_client.parser import text_string_to_metric_families

from agent.errors import AgentError
from agent.schema import ServerMetrics
from agent.telemetry import Sampler

COUNTERS = {
    "nv_inference_request_success": "request_success",
    "nv_inference_request_failure": "request_failure",
    "nv_inference_count": "inference_count",
    "nv_inference_exec_count": "exec_count",
    "nv_inference_request_duration_us": "request_us",
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_compute_input_duration_us": "compute_input_us",
    "nv_inference_compute_infer_duration_us": "compute_infer_us",
    "nv_inference_compute_output_duration_us": "compute_output_us",
}
# gauge -> (field, how several GPUs combine, scale to the field's unit)
GAUGES = {
    "nv_gpu_utilization": ("gpu_utilization_pct", "mean", 100.0),
    "nv_gpu_memory_used_bytes": ("gpu_memory_used_mb", "sum", 1 / 2**20),
    "nv_gpu_power_usage": ("gpu_power_w", "sum", 1.0),
    "nv_cpu_utilization": ("cpu_utilization_pct", "mean", 100.0),
    "nv_cpu_memory_used_bytes": ("cpu_memory_used_mb", "sum", 1 / 2**20),
}
SCRAPE_INTERVAL_S = 0.5


_WANTED = frozenset(COUNTERS) | frozenset(GAUGES)


def _wanted_lines(text: str) -> str:
    """The lines of the families read here (with their # HELP / # TYPE): the summaries and
    the rest are not parsed (prometheus_client's parser is pure Python and holds the GIL
    that the load generator's threads need)."""
    keep = []
    for line in text.splitlines():
        body = line[7:] if line.startswith(("# HELP ", "# TYPE ")) else line
        if body.split("{", 1)[0].split(" ", 1)[0] in _WANTED:
            keep.append(line)
    return "\n".join(keep) + "\n"


def parse(text: str, model: str) -> tuple[dict[str, float], dict[str, float]]:
    """(counters of ``model`` summed over its versions, gauges combined over GPUs)."""
    counters: dict[str, float] = defaultdict(float)
    gauges: dict[str, list[float]] = defaultdict(list)
    for family in text_string_to_metric_families(_wanted_lines(text)):  # counters' samples come back as <name>_total
        if family.name in COUNTERS:
            for s in family.samples:
                if s.labels.get("model") == model:
                    counters[COUNTERS[family.name]] += s.value
        elif family.name in GAUGES:
            gauges[family.name] += [s.value for s in family.samples]
    combined = {}
    for name, values in gauges.items():
        field, how, scale = GAUGES[name]
        total = sum(values) if how == "sum" else sum(values) / len(values)
        combined[field] = total * scale
    return dict(counters), combined


def scrape(url: str, timeout: float = 5.0) -> str:
    try:
        r = httpx.get(url, timeout=timeout)
        r.raise_for_status()
    except httpx.HTTPError as e:
        raise AgentError(f"cannot read Triton's metrics at {url}: {type(e).__name__}: {e}") from e
    return r.text


def metrics_url(host_port: str) -> str:
    """``host:port`` (or a URL) of the metrics port -> its ``/metrics`` URL."""
    base = host_port if "://" in host_port else f"http://{host_port}"
    return base.rstrip("/") + ("" if base.rstrip("/").endswith("/metrics") else "/metrics")


class ServerMetricsRecorder:
    def __init__(self, url: str, model: str, interval_s: float = SCRAPE_INTERVAL_S, marks: bool = False) -> None:
        self.url = metrics_url(url)
        self.marks = marks
        self.model = model
        self.interval = interval_s
        self.counters: dict[str, float] = defaultdict(float)
        self.gauge_sums: dict[str, float] = defaultdict(float)
        self.gauge_counts: dict[str, int] = defaultdict(int)
        self.scrapes = 0
        self._before: dict[str, float] | None = None
        # each read of the counters: when its scrape was sent and when its answer arrived
        # (Triton snapshots the counters somewhere between the two)
        self.start_sent = self.span_start = self.end_sent = self.span_end = 0.0
        self.client_requests: int | None = None
        self.client_requests_max: int | None = None
        self._lock = threading.Lock()
        self._sampler = Sampler(self._scrape_gauges, interval_s, "triton-metrics")

    def _gauges(self, gauges: dict[str, float]) -> None:
        with self._lock:  # the scrape thread and start/stop both add
            for k, v in gauges.items():
                self.gauge_sums[k] += v
                self.gauge_counts[k] += 1
            self.scrapes += 1

    def _scrape_gauges(self) -> None:
        try:
            self._gauges(parse(scrape(self.url), self.model)[1])
        except AgentError:
            pass  # one missed scrape only thins the gauge mean

    def _read(self) -> tuple[float, float, dict[str, float]]:
        """(scrape sent, answer arrived — perf_counter times; the counters). Triton snapshots
        the counters at an unknown moment between the two: a busy server first queues the
        scrape, a busy client reads the answer late."""
        sent = time.perf_counter()
        text = scrape(self.url)
        arrived = time.perf_counter()
        counters, gauges = parse(text, self.model)
        self._gauges(gauges)
        return sent, arrived, counters

    def start(self) -> None:
        """Read the counters now: the start of a span (call it right at a window's start)."""
        self.start_sent, self.span_start, self._before = self._read()

    def stop(self) -> None:
        """Read the counters now and add the span's deltas (right at a window's end)."""
        self.end_sent, self.span_end, after = self._read()
        for k, v in after.items():
            self.counters[k] += v - self._before.get(k, 0.0)
        self._before = None

    def add_client_requests(self, least: int, most: int) -> None:
        """Requests the client completed surely inside this span (between the first answer's
        arrival and the last scrape's sending) and possibly inside it (first scrape sent to
        last answer arrived): ``request_success`` lies between the two, up to the requests
        in flight at the edges."""
        self.client_requests = (self.client_requests or 0) + least
        self.client_requests_max = (self.client_requests_max or 0) + most

    def count_client(self, completions: list[float]) -> None:
        """The client's completion times (perf_counter) -> this span's two client counts."""
        self.add_client_requests(sum(1 for t in completions if self.span_start <= t <= self.end_sent),
                                 sum(1 for t in completions if self.start_sent <= t <= self.span_end))

    def __enter__(self) -> ServerMetricsRecorder:
        """Scrape the gauges in a thread until exit; with ``marks`` the caller reads the
        counters itself (``start``/``stop`` right at the window's edges), else enter and
        exit do."""
        if not self.marks:
            self.start()
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sampler.stop()
        if exc[0] is None and self._before is not None:
            self.stop()

    def result(self) -> ServerMetrics | None:
        c = self.counters
        n = int(c.get("request_success", 0))
        if n <= 0:
            return None

        def per_request(key: str) -> float:
            return round(max(0.0, c.get(key, 0.0)) / n, 1)

        gauges = {k: round(self.gauge_sums[k] / self.gauge_counts[k], 2) for k in self.gauge_sums}
        return ServerMetrics(
            request_success=n, request_failure=int(c.get("request_failure", 0)),
            inference_count=int(c.get("inference_count", 0)), exec_count=int(c.get("exec_count", 0)),
            request_us=per_request("request_us"), queue_us=per_request("queue_us"),
            compute_input_us=per_request("compute_input_us"), compute_infer_us=per_request("compute_infer_us"),
            compute_output_us=per_request("compute_output_us"), scrapes=self.scrapes,
            client_requests=self.client_requests, client_requests_max=self.client_requests_max, **gauges)


def combined(recorders: list[ServerMetricsRecorder]) -> ServerMetrics | None:
    """One ServerMetrics over several recorders' spans (e.g. the windows a measurement used)."""
    if not recorders:
        return None
    total = ServerMetricsRecorder(recorders[0].url, recorders[0].model, recorders[0].interval)
    for r in recorders:
        for k, v in r.counters.items():
            total.counters[k] += v
        for k, v in r.gauge_sums.items():
            total.gauge_sums[k] += v
            total.gauge_counts[k] += r.gauge_counts[k]
        total.scrapes += r.scrapes
        if r.client_requests is not None:
            total.add_client_requests(r.client_requests, r.client_requests_max)
    return total.result()
