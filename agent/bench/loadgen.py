"""MLPerf Inference scenarios run by the official LoadGen (``mlcommons-loadgen``).

How one scenario is measured
----------------------------
LoadGen (the C++ library behind ``mlperf_loadgen``) owns the clock, the query
schedule and the verdict. This module gives it:

* a **query sample library** (QSL): ``samples`` preprocessed random input tensors
  (:func:`agent.build.verify.random_batch`, the engine's input shape) — or, for image
  payloads, that many encoded images (``Backend.samples``) that each request decodes
  and preprocesses —, LoadGen's ``performance_sample_count``; LoadGen's load/unload
  callbacks mark them resident;
* a **system under test** (SUT): ``issue_queries`` only queues the issued samples and
  returns, so LoadGen's issue thread is never blocked; ``workers`` threads take what
  is queued — up to ``batch`` samples at a time, i.e. dynamic batching — run it with
  the backend's ``infer`` (an engine in this process, or a Triton request) and report
  each sample with ``lg.QuerySamplesComplete``. Single-stream and multi-stream queries
  are one sample / ``samples_per_query`` samples issued one query at a time; server
  queries arrive on LoadGen's Poisson schedule at ``server_target_qps``; offline is one
  query holding every sample, run in batches.

After the run the verdict is LoadGen's own: ``Result is : VALID|INVALID`` and the
``... satisfied : NO`` lines (with LoadGen's recommendations) of
``mlperf_log_summary.txt``; the numbers are the keys of ``mlperf_log_detail.txt``
that MLPerf's submission checker reads: offline ``result_samples_per_second``,
server ``result_scheduled_samples_per_sec``, single-stream
``early_stopping_latency_ss`` and multi-stream ``early_stopping_latency_ms`` (the
early-stopping estimate of the 90th / 99th percentile; the plain percentile when
too few queries ran for an estimate). Latency percentiles (min, mean, p50…p99, max)
are LoadGen's per-sample latencies (per query of 8 samples for multi-stream);
their standard deviation, which LoadGen does not log, comes from the SUT's own
issue-to-completion times of the same queries. Offline latencies are the SUT's
per-batch run times (LoadGen's offline "latency" is time since the one query began).

Defaults (LoadGen 6.x, ``resnet50`` — the classification benchmark)
-------------------------------------------------------------------
Settings start from the ``mlperf.conf`` compiled into LoadGen 6.x, loaded with
``TestSettings.FromConfig(path, "resnet50", scenario, conf_type=0)`` (conf_type 0:
the built-in file only, no user.conf), so they are LoadGen's, not copies:

* every scenario: ``min_duration`` 600 s, the fixed RNG seeds of the round;
* single-stream: 90th percentile; ``min_query_count`` 100 (TestSettings' default —
  since v2.0 early stopping, not a count, bounds the run; older rules said 1024);
* multi-stream: 8 samples per query, 99th percentile, ``min_query_count`` 662
  (the early-stopping minimum at p99; older rules said 270336);
* server: 15 ms at the 99th percentile, ``min_query_count`` 100 (older rules 270336);
  with 0 late queries early stopping needs about 460 queries, so short server runs
  need ``min_queries`` at least that;
* offline: ``min_query_count`` 24576 samples (one query).

Overrides: ``min_duration_s``, ``min_queries``, ``target_latency_ms`` (server only: the
latency bound). ``performance_sample_count_override`` is the QSL's size. The
schedule hints LoadGen needs are measured, not guessed: a few timed batches give
the latency / throughput, from which ``single_stream_expected_latency_ns``,
``multi_stream_expected_latency_ns`` (0.8 × measured, so LoadGen generates enough
queries to fill ``min_duration``) and ``offline_expected_qps`` (1.5 × measured, so
the one offline query lasts at least ``min_duration``) are set.

Server QPS search
-----------------
As submitters do, ``server_target_qps`` is searched for the highest value LoadGen
calls VALID: start at half the measured capacity, double while VALID (halve while
INVALID) to bracket, then bisect until the bracket is within 5 % or ``max_steps``
LoadGen runs were made. Halving stops at the QPS that keeps the SUT busy 10 % of the
time (from the measured single-sample latency): a run still INVALID there misses the
bound on service time alone, and slower schedules would only make each run longer. Every run's target QPS is recorded in order
(``qps_tried``); the result is the highest VALID run (its ``scheduled`` QPS is the
metric), or the last run, INVALID, when none was valid."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.errors import AgentError

SCENARIOS = ("single-stream", "multi-stream", "offline", "server")
LOADGEN_NAME = {"single-stream": "SingleStream", "multi-stream": "MultiStream",
                "offline": "Offline", "server": "Server"}
METRIC = {"offline": "samples_per_second", "server": "scheduled_qps",
          "single-stream": "p90_latency_ms", "multi-stream": "p99_latency_ms"}
CONF_MODEL = "resnet50"  # the classification benchmark whose mlperf.conf entries apply
QSL_SAMPLES = 64
SEARCH_TOLERANCE = 0.05
MIN_SERVER_QPS = 0.5
LIGHT_LOAD = 0.1  # the server search's floor: SUT busy 10 % of the time


@dataclass(frozen=True)
class Overrides:
    """User overrides of LoadGen's settings (None: LoadGen's default)."""

    min_duration_s: float | None = None
    min_queries: int | None = None
    target_latency_ms: float | None = None  # server latency bound


@dataclass
class Backend:
    """What LoadGen drives: one ``infer(x)`` per worker thread (each with its own
    state, e.g. a Triton client), every one running a batch of up to ``batch`` samples."""

    name: str
    input_shape: tuple[int, ...]
    batch: int
    infers: list[Callable[[np.ndarray], object]]
    close: Callable[[], None] = lambda: None
    # the QSL's samples: n inputs, indexable by sample (default: random tensors of input_shape)
    samples: Callable[[int], np.ndarray] | None = None

    def make_samples(self, n: int) -> np.ndarray:
        if self.samples is not None:
            return self.samples(n)
        from agent.build.verify import random_batch

        return random_batch(n, self.input_shape)


@dataclass
class Run:
    """One LoadGen test: its settings, LoadGen's verdict and numbers, and the SUT's view."""

    scenario: str
    log_dir: Path
    valid: bool
    reasons: list[str]
    detail: dict[str, object]
    target_qps: float | None
    settings: dict[str, float]
    elapsed_s: float
    query_latencies_s: list[float] = field(default_factory=list)
    batch_latencies_s: list[float] = field(default_factory=list)
    batch_used: int = 1
    samples: int = 0  # completed by the SUT

    @property
    def metric_value(self) -> float:
        d = self.detail
        if self.scenario == "offline":
            return float(d.get("result_samples_per_second", 0.0))
        if self.scenario == "server":
            return float(d.get("result_scheduled_samples_per_sec", 0.0))
        key = "early_stopping_latency_ss" if self.scenario == "single-stream" else "early_stopping_latency_ms"
        fallback = ("result_90.00_percentile_latency_ns" if self.scenario == "single-stream"
                    else "result_99.00_percentile_per_query_latency_ns")
        ns = d.get(key)
        if not isinstance(ns, (int, float)) or ns <= 0:
            ns = d.get(fallback, 0)
        return float(ns) / 1e6


# --------------------------------------------------------------------- settings
def loadgen_settings(scenario: str, over: Overrides, samples: int, hint: Calibration):
    """LoadGen's TestSettings: built-in mlperf.conf for resnet50, then the overrides."""
    import mlperf_loadgen as lg

    s = lg.TestSettings()
    s.FromConfig("", CONF_MODEL, LOADGEN_NAME[scenario], 0)  # conf_type 0: built-in mlperf.conf only
    s.scenario = getattr(lg.TestScenario, LOADGEN_NAME[scenario])
    s.mode = lg.TestMode.PerformanceOnly
    s.performance_sample_count_override = samples
    if over.min_duration_s is not None:
        s.min_duration_ms = round(over.min_duration_s * 1000)
    if over.min_queries is not None:
        s.min_query_count = over.min_queries
    if over.target_latency_ms is not None:
        s.server_target_latency_ns = round(over.target_latency_ms * 1e6)
    s.single_stream_expected_latency_ns = max(1, int(hint.sample_latency_s * 0.8 * 1e9))
    s.multi_stream_expected_latency_ns = max(1, int(hint.query_latency_s * 0.8 * 1e9))
    s.offline_expected_qps = max(1.0, hint.samples_per_s * 1.5)
    return s


def settings_summary(s) -> dict[str, float]:
    return {"min_duration_ms": s.min_duration_ms, "min_query_count": s.min_query_count,
            "server_target_latency_ms": s.server_target_latency_ns / 1e6,
            "server_target_latency_percentile": s.server_target_latency_percentile * 100,
            "single_stream_target_latency_percentile": s.single_stream_target_latency_percentile * 100,
            "multi_stream_target_latency_percentile": s.multi_stream_target_latency_percentile * 100,
            "multi_stream_samples_per_query": s.multi_stream_samples_per_query}


def default_samples_per_query() -> int:
    import mlperf_loadgen as lg

    s = lg.TestSettings()
    s.FromConfig("", CONF_MODEL, "MultiStream", 0)
    return int(s.multi_stream_samples_per_query)


# ---------------------------------------------------------------- calibration
@dataclass(frozen=True)
class Calibration:
    sample_latency_s: float  # one sample, one request
    query_latency_s: float  # one multi-stream query
    samples_per_s: float  # batches of backend.batch, all workers


def calibrate(backend: Backend, samples_per_query: int, repeats: int = 3) -> Calibration:
    """Time a few requests (after one warm-up each): the schedule hints LoadGen needs."""

    def timed(n: int) -> float:
        x = backend.make_samples(n)
        infer = backend.infers[0]
        infer(x)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            infer(x)
            best = min(best, time.perf_counter() - t)
        return best

    one = timed(1)
    batch = timed(backend.batch) if backend.batch > 1 else one
    per_query = timed(min(samples_per_query, backend.batch)) * -(-samples_per_query // backend.batch)
    return Calibration(one, per_query, backend.batch / batch * len(backend.infers))


# ------------------------------------------------------------------ QSL + SUT
class SystemUnderTest:
    """Queues LoadGen's samples; ``workers`` threads run them in batches of up to ``batch``."""

    def __init__(self, backend: Backend, samples: int, batch: int) -> None:
        self.data = backend.make_samples(samples)  # the QSL's tensors (or encoded images)
        self.batch = batch
        self.queue: deque = deque()  # (sample, query number)
        self.cond = threading.Condition()
        self.stopping = False
        self.error: BaseException | None = None
        self.issued_at: list[float] = []  # per query (one issue_queries call)
        self.left: list[int] = []
        self.done_at: list[float] = []
        self.batch_latencies: list[float] = []
        self.completed = 0
        self.threads = [threading.Thread(target=self._work, args=(f,), daemon=True) for f in backend.infers]

    # LoadGen callbacks ------------------------------------------------------
    def issue_queries(self, samples) -> None:
        now = time.perf_counter()
        with self.cond:
            q = len(self.issued_at)
            self.issued_at.append(now)
            self.left.append(len(samples))
            self.done_at.append(0.0)
            self.queue.extend((s, q) for s in samples)
            self.cond.notify_all()

    def flush_queries(self) -> None:
        pass

    def load_samples(self, indices) -> None:
        pass  # every sample is resident already

    unload_samples = load_samples

    # worker ---------------------------------------------------------------------
    def _work(self, infer) -> None:
        import mlperf_loadgen as lg

        while True:
            with self.cond:
                while not self.queue and not self.stopping:
                    self.cond.wait()
                if self.stopping and not self.queue:
                    return
                take = [self.queue.popleft() for _ in range(min(self.batch, len(self.queue)))]
            x = self.data[[s.index for s, _ in take]]
            t = time.perf_counter()
            try:
                if self.error is None:
                    infer(x)
            except BaseException as e:  # LoadGen still needs every sample answered
                self.error = e
            end = time.perf_counter()
            with self.cond:
                self.batch_latencies.append(end - t)
                self.completed += len(take)
                for _, q in take:
                    self.left[q] -= 1
                    if self.left[q] == 0:
                        self.done_at[q] = end
            lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, 0, 0) for s, _ in take])

    def __enter__(self) -> SystemUnderTest:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        for t in self.threads:
            t.join(timeout=60)

    def query_latencies(self) -> list[float]:
        return [d - i for i, d, n in zip(self.issued_at, self.done_at, self.left, strict=True) if n == 0]


# -------------------------------------------------------------------- one run
SUMMARY = "mlperf_log_summary.txt"
DETAIL = "mlperf_log_detail.txt"


def _bullets(summary: str, heading: str) -> list[str]:
    """The `` * item`` lines under ``heading`` (continuation lines joined)."""
    lines = summary.splitlines()
    if heading not in lines:
        return []
    items: list[str] = []
    for ln in lines[lines.index(heading) + 1:]:
        if ln.startswith(" * "):
            items.append(ln[3:].strip())
        elif ln.startswith(" ") and ln.strip() and items:
            items[-1] += " " + ln.strip()
        else:
            break
    return items


def read_verdict(summary: str) -> tuple[bool, list[str]]:
    """LoadGen's ``Result is : VALID|INVALID``, its unmet constraints and recommendations."""
    m = re.search(r"^Result is\s*:\s*(VALID|INVALID)\s*$", summary, re.MULTILINE)
    if m is None:
        raise AgentError("LoadGen wrote no verdict (no 'Result is' line in its summary)")
    unmet = re.findall(r"^\s+(.+?satisfied)\s*:\s*NO\s*$", summary, re.MULTILINE)
    reasons = [f"{name.strip()}: NO" for name in unmet] + _bullets(summary, "Recommendations:")
    if any(name.startswith("Early stopping") for name in unmet):
        reasons += _bullets(summary, "Early Stopping Result:")
    return m.group(1) == "VALID", reasons[:32]


def read_detail(text: str) -> dict[str, object]:
    """``:::MLLOG {json}`` lines of mlperf_log_detail.txt as {key: value} (last one wins)."""
    out: dict[str, object] = {}
    for line in text.splitlines():
        if line.startswith(":::MLLOG "):
            try:
                entry = json.loads(line[len(":::MLLOG "):])
            except json.JSONDecodeError:
                continue
            out[entry.get("key")] = entry.get("value")
    return out


def run_loadgen(backend: Backend, scenario: str, over: Overrides, hint: Calibration,
                log_dir: Path, batch: int, samples: int = QSL_SAMPLES,
                target_qps: float | None = None) -> Run:
    """One LoadGen performance run; the summary and detail logs stay in ``log_dir``."""
    import mlperf_loadgen as lg

    s = loadgen_settings(scenario, over, samples, hint)
    if target_qps is not None:
        s.server_target_qps = target_qps
    log_dir.mkdir(parents=True, exist_ok=True)
    out = lg.LogOutputSettings()
    out.outdir = str(log_dir)
    out.copy_summary_to_stdout = False
    log = lg.LogSettings()
    log.log_output = out
    log.enable_trace = False
    with SystemUnderTest(backend, samples, batch) as sut:
        handle = lg.ConstructSUT(sut.issue_queries, sut.flush_queries)
        qsl = lg.ConstructQSL(samples, samples, sut.load_samples, sut.unload_samples)
        try:
            t = time.perf_counter()
            lg.StartTestWithLogSettings(handle, qsl, s, log)
            elapsed = time.perf_counter() - t
        finally:
            lg.DestroyQSL(qsl)
            lg.DestroySUT(handle)
    if sut.error is not None:
        e = sut.error
        raise e if isinstance(e, AgentError) else AgentError(
            f"{backend.name}: inference failed during the LoadGen run: {' '.join(str(e).split())[:300]}")
    for name in (SUMMARY, DETAIL):
        if not (log_dir / name).is_file():
            raise AgentError(f"LoadGen wrote no {name} in {log_dir}")
    for empty in ("mlperf_log_accuracy.json", "mlperf_log_trace.json"):  # empty in performance mode
        (log_dir / empty).unlink(missing_ok=True)
    valid, reasons = read_verdict((log_dir / SUMMARY).read_text())
    return Run(scenario=scenario, log_dir=log_dir, valid=valid, reasons=reasons,
               detail=read_detail((log_dir / DETAIL).read_text()),
               target_qps=target_qps if scenario == "server" else (s.offline_expected_qps if scenario == "offline" else None),
               settings=settings_summary(s), elapsed_s=elapsed,
               query_latencies_s=sut.query_latencies(), batch_latencies_s=list(sut.batch_latencies),
               batch_used=batch, samples=sut.completed)


# --------------------------------------------------------------- server search
def light_load_qps(hint: Calibration, workers: int) -> float:
    """The QPS at which the SUT is busy ``LIGHT_LOAD`` of the time: an INVALID run there
    fails the bound on service time alone, and a lower QPS would not make it VALID."""
    return max(MIN_SERVER_QPS, LIGHT_LOAD * workers / max(hint.sample_latency_s, 1e-6))


def search_server_qps(run_at: Callable[[float], Run], start_qps: float, max_steps: int,
                      floor_qps: float = MIN_SERVER_QPS) -> tuple[Run, list[float]]:
    """Highest VALID ``server_target_qps``: bracket by doubling / halving (not below
    ``floor_qps``), then bisect."""
    tried: list[float] = []
    best: Run | None = None
    last: Run | None = None
    lo = hi = None  # highest VALID, lowest INVALID target
    qps = max(start_qps, floor_qps)
    while len(tried) < max_steps:
        qps = round(qps, 2)
        if qps in tried:
            break
        run = run_at(qps)
        tried.append(qps)
        last = run
        if run.valid:
            if best is None or qps > (best.target_qps or 0):
                best = run
            lo = qps
        else:
            hi = qps if hi is None else min(hi, qps)
        if lo is not None and hi is not None:
            if hi <= lo * (1 + SEARCH_TOLERANCE):
                break
            qps = (lo + hi) / 2
        elif lo is not None:
            qps = lo * 2
        else:
            if qps <= floor_qps:
                break
            qps = max(hi / 2, floor_qps)
    assert last is not None
    return (best or last), tried
