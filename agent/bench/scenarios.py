"""``agent bench --scenario``: an MLPerf scenario (:mod:`agent.bench.loadgen`) run on
every selected engine, in this process or through Triton, as a result document.

Systems under test: in-process, one worker thread runs the engine (the runtime's
own thread pool uses the cores); through Triton, ``max(--concurrency)`` worker
threads, each with its own HTTP or gRPC client, keep up to that many requests in
flight. Either way a worker runs up to ``max(--batch-sizes)`` queued samples (capped
at the engine's max batch) in one request. Served models are first checked against
the in-process engine (:func:`agent.bench.served.check_served`).

``--input images``: the query sample library holds encoded images (``--images``, by
default a synthetic JPEG) instead of tensors; in-process each query is decoded and
preprocessed before the engine runs (:class:`agent.classify.runner.ImageRunner`),
through Triton it goes to the model's ``<model>_classifier`` ensemble. The result's
``input`` is ``image`` (the fleet report's "onnx images" backends).

Each result is a normal ``BenchResult``: ``batch_size`` is the samples per query
(multi-stream) or the batch the offline query was run in (1 for single-stream and
server), ``requests`` LoadGen's queries, ``windows`` 1, ``stable`` LoadGen's verdict,
``scenario`` the verdict, metric and settings. LoadGen's logs are kept under
``--log-dir`` (default ``<engines>/../bench-logs``) in
``<UTC time>-<engine>-<scenario>/`` (server: one ``qps-<target>/`` folder per run of
the search)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np

from agent.bench import loadgen as lgm
from agent.bench.options import BenchOptions
from agent.config import AgentConfig
from agent.errors import AgentError
from agent.schema import BenchResult, BenchSettings, LatencyStats, ResultDocument, ScenarioResult

MAX_BATCH_CAP = 64


def log_root(opts: BenchOptions) -> Path:
    return opts.log_dir or opts.engines_dir.resolve().parent / "bench-logs"


def overrides(opts: BenchOptions) -> lgm.Overrides:
    return lgm.Overrides(min_duration_s=opts.min_duration_s, min_queries=opts.min_queries,
                         target_latency_ms=opts.target_latency_ms)


def _ms(detail: dict, key: str) -> float | None:
    v = detail.get(key)
    return float(v) / 1e6 if isinstance(v, (int, float)) else None


def latency(run: lgm.Run) -> LatencyStats:
    """LoadGen's latencies (per query for multi-stream); std from the SUT's own times."""
    from agent.bench.measure import latency_stats

    if run.scenario == "offline" or not run.query_latencies_s:
        return latency_stats(run.batch_latencies_s or [run.elapsed_s])
    d = run.detail
    q = "per_query_" if run.scenario == "multi-stream" else ""
    key = "result_{}_query_latency_ns" if q else "result_{}_latency_ns"
    vals = {name: _ms(d, key.format(name)) for name in ("min", "max", "mean")}
    vals |= {f"p{p}": _ms(d, f"result_{p}.00_percentile_{q}latency_ns") for p in (50, 90, 95, 99)}
    if any(v is None for v in vals.values()):
        return latency_stats(run.query_latencies_s)
    return LatencyStats(**vals, std=float(np.std(np.asarray(run.query_latencies_s) * 1e3)))


def scenario_result(run: lgm.Run, tried: list[float]) -> tuple[ScenarioResult, float]:
    """(ScenarioResult, completed samples per second) of one LoadGen run."""
    d, s, name = run.detail, run.settings, run.scenario
    spq = int(s["multi_stream_samples_per_query"]) if name == "multi-stream" else 1
    pct = {"server": s["server_target_latency_percentile"],
           "single-stream": s["single_stream_target_latency_percentile"],
           "multi-stream": s["multi_stream_target_latency_percentile"]}.get(name)
    rate_key = {"offline": "result_samples_per_second", "server": "result_completed_samples_per_sec",
                "single-stream": "result_qps_with_loadgen_overhead"}.get(name, "")
    rate = d.get(rate_key)
    ips = float(rate) if isinstance(rate, (int, float)) else run.samples / run.elapsed_s
    result = ScenarioResult(
        name=name, valid=run.valid, invalid_reasons=run.reasons, metric=lgm.METRIC[name],
        metric_value=round(run.metric_value, 4), samples_per_query=spq,
        target_qps=run.target_qps, latency_percentile=pct,
        target_latency_ms=s["server_target_latency_ms"] if name == "server" else None,
        min_duration_ms=int(s["min_duration_ms"]), min_query_count=int(s["min_query_count"]),
        queries=int(d.get("result_query_count") or 0), samples=run.samples,
        qps_tried=tried, log_dir=str(run.log_dir), loadgen_version=str(d.get("loadgen_version") or "") or None,
    )
    return result, max(ips, 0.0)


def measure(backend: lgm.Backend, opts: BenchOptions, tag: str, status) -> tuple[lgm.Run, list[float]]:
    """The scenario on one backend: one LoadGen run, or the server QPS search."""
    scenario = opts.scenario or ""
    spq = lgm.default_samples_per_query()
    hint = lgm.calibrate(backend, spq)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    root = log_root(opts) / f"{stamp}-{tag}-{scenario}"
    over = overrides(opts)
    if scenario != "server":
        status(f"{tag} {scenario}")
        return lgm.run_loadgen(backend, scenario, over, hint, root, backend.batch), []

    def run_at(qps: float) -> lgm.Run:
        status(f"{tag} server at {qps:g} QPS")
        return lgm.run_loadgen(backend, "server", over, hint, root / f"qps-{qps:09.2f}", backend.batch,
                               target_qps=qps)

    if opts.server_qps is not None:
        return run_at(opts.server_qps), [opts.server_qps]
    return lgm.search_server_qps(run_at, hint.samples_per_s / 2, opts.server_steps,
                                 lgm.light_load_qps(hint, len(backend.infers)))


def _settings(opts: BenchOptions, url: str | None = None) -> BenchSettings:
    return BenchSettings(warmup=opts.warmup, window_seconds=None, iterations=None,
                         stability_pct=opts.stability_pct, max_windows=1, url=url)


def _batch(opts: BenchOptions, max_batch: int | None) -> int:
    return max(1, min(max(opts.batch_sizes or [1]), max_batch or MAX_BATCH_CAP))


def _input(opts: BenchOptions) -> str:
    return "image" if opts.input == "images" else "tensor"


def _bench_result(run: lgm.Run, tried: list[float], **fields) -> BenchResult:
    scen, ips = scenario_result(run, tried)
    batch = {"multi-stream": scen.samples_per_query, "offline": run.batch_used}.get(run.scenario, 1)
    return BenchResult(batch_size=batch, latency_ms=latency(run), throughput_ips=round(ips, 3),
                       requests=scen.queries, windows=1, stable=run.valid, cv_pct=None,
                       scenario=scen, **fields)


# ------------------------------------------------------------------ in-process
def run_scenario_inprocess(opts: BenchOptions, config: AgentConfig) -> ResultDocument:
    from agent.bench.inprocess import _plan, release_memory
    from agent.facts import node_facts
    from agent.runners import default_device, eager_runner, load_runner
    from agent.ui import progress

    plan = _plan(replace(opts, batch_sizes=[1]))  # the scenario picks its own batches
    device = default_device()
    if opts.precision == "fp16" and device != "cuda":
        raise AgentError("--precision fp16 needs a CUDA GPU and this node has none")
    results: list[BenchResult] = []
    steps = [(m, f, rec) for m, items in plan for f, rec in items]
    with progress() as bar:
        task = bar.add_task(f"{opts.scenario}", total=len(steps))
        for model, fmt, rec in steps:
            release_memory()
            bar.update(task, description=f"{model} {fmt}: loading")
            runner = (eager_runner(model, precision=opts.precision, device=device) if rec is None
                      else load_runner(rec, opts.engines_dir, device=device, check_hashes=False))
            samples = None
            if opts.input == "images":  # each query: decode + preprocess its images, then the engine
                from agent.classify.imagenet import image_batch
                from agent.classify.runner import ImageRunner

                runner = ImageRunner(runner, model, opts.image_payloads())
                samples = partial(image_batch, runner.images)

            def infer(x: np.ndarray, runner=runner, images=samples is not None) -> object:
                return runner.infer(x if images else runner.prepare(x))

            backend = lgm.Backend(f"{model} {fmt}", runner.input_shape, _batch(opts, runner.max_batch), [infer],
                                  samples=samples)
            run, tried = measure(backend, opts, f"{model}_{fmt}", lambda s: bar.update(task, description=s))
            results.append(_bench_result(run, tried, model=model, format=fmt, precision=opts.precision,
                                         device=runner.device, input=_input(opts)))
            del runner
            bar.advance(task)
    return ResultDocument(target="inprocess", node=node_facts(config), settings=_settings(opts), results=results)


# -------------------------------------------------------------------- Triton
def _served_backend(opts: BenchOptions, served, workers: int) -> lgm.Backend:
    """``workers`` infer functions; each thread gets its own client on first use (the HTTP
    client is bound to the thread that first uses it)."""
    import threading

    from agent.bench.served import Request
    from agent.triton.client import call, connect

    local = threading.local()
    clients: list = []
    rec = served.record

    def infer(x: np.ndarray) -> object:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = connect(opts.url, opts.protocol)
            clients.append(client)
        return call(f"inference on {rec.name}", Request(client, opts.protocol, served, x))

    def close() -> None:
        for c in clients:
            try:
                c.close()
            except Exception:  # a client bound to a finished thread
                pass

    return lgm.Backend(rec.name, tuple(rec.inputs[0].shape[1:]), _batch(opts, served.max_batch),
                       [infer] * workers, close, samples=served.payload if served.images else None)


def run_scenario_served(opts: BenchOptions, config: AgentConfig) -> ResultDocument:
    from agent.bench.served import served_models_checked
    from agent.triton.client import connect
    from agent.ui import progress

    client = connect(opts.url, opts.protocol)
    workers = max(opts.concurrency or [1])
    try:
        served, node = served_models_checked(client, replace(opts, batch_sizes=[1]), config)
    finally:
        try:
            client.close()
        except Exception:
            pass
    results: list[BenchResult] = []
    with progress() as bar:
        task = bar.add_task(f"{opts.scenario}", total=len(served))
        for s in served:
            rec = s.record
            backend = _served_backend(opts, s, workers)
            try:
                run, tried = measure(backend, opts, rec.name, lambda m: bar.update(task, description=m))
            finally:
                backend.close()
            results.append(_bench_result(run, tried, model=rec.model, format=rec.format, precision=rec.precision,
                                         device=s.device, concurrency=workers, triton_model=s.name,
                                         protocol=opts.protocol, input=_input(opts)))
            bar.advance(task)
    return ResultDocument(target="triton", node=node, settings=_settings(opts, opts.url), results=results)


def scenario_table(doc: ResultDocument):
    """The scenario columns (verdict, metric, settings, logs) as a Rich table."""
    from rich.table import Table

    t = Table(title=f"MLPerf LoadGen scenarios ({doc.target})", title_justify="left")
    for c in ("model", "format", "scenario", "verdict", "metric", "value", "queries", "samples/s",
              "QPS tried", "logs"):
        t.add_column(c, justify="right" if c in ("value", "queries", "samples/s") else "left")
    for r in doc.results:
        s = r.scenario
        if s is None:
            continue
        verdict = "[green]VALID[/]" if s.valid else "[red]INVALID[/] " + "; ".join(
            x for x in s.invalid_reasons if x.endswith(": NO"))
        t.add_row(r.model, r.format, s.name, verdict, s.metric, f"{s.metric_value:.2f}", str(s.queries),
                  f"{r.throughput_ips:.1f}", ", ".join(f"{q:g}" for q in s.qps_tried) or "-", s.log_dir or "-")
    return t
