"""In-process benchmark: every engine run by its own runtime inside this process.

Eager PyTorch is the baseline; TorchScript, ONNX Runtime and TensorRT engines
come from the build directory's manifest and are loaded with
:mod:`agent.runners` (hash-checked). On a GPU the input is placed on the
device once and every request is CUDA-synchronised. Per model, in two phases:

1. *Load, one format at a time*: each runner is loaded, then for every batch
   size warmed up and run for one window on its own (not counted); it stays
   loaded for phase 2.
2. *Interleaved rounds*, per batch size: one window of each format in turn,
   forward then reverse order (eager, onnx, torchscript, torchscript, onnx,
   eager, ...; :func:`agent.bench.measure.measure_interleaved`), until every
   format's last 3 windows are stable or ``--max-windows`` rounds (exactly
   ``--rounds`` rounds when given). ``speedup_vs_eager`` is the geometric mean
   of the per-round throughput ratios engine/eager, ``speedup_ci_low/high``
   its 95 % t-interval, ``speedup_pairs`` the number of rounds: load drift hits
   both windows of a round and cancels out. Eager's own row has speedup 1 and
   no interval; without eager among the formats there is no speedup.
   Absolute figures (percentiles, ``throughput_ips``, ``stable``, ``cv_pct``)
   come from each format's own last 3 windows
   (:func:`agent.bench.measure.summarize`).

Interleaving cancels a load that changes; it cannot cancel one that hurts the
formats unequally. On oversubscribed CPUs (load average above the CPU count)
OpenMP threads that spin while they wait (libgomp's default) collapse (eager
mobilenet_v3_small batch 1, 2 CPUs, load 7: 1.9 inf/s with 2 threads, 37 with
1, 61 with passive waiting) while ONNX Runtime's pool degrades gently: the
agent sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment chose
(``agent/__init__.py``; recorded in ``settings.omp_wait_policy``), and the
bench warns when the load average exceeded the CPU count.

Memory: ``peak_host_mem_mb`` is what the measured engine itself costs, taken
in phase 1 while it alone runs: the peak resident set size (RSS) of this
process, sampled with psutil every 20 ms from loading the engine to the end of
its last single window, minus the RSS just before loading it — taken after
``gc`` and glibc's ``malloc_trim``, so neither the formats loaded before it
(still alive, part of the baseline) nor what earlier models left in the process
are counted. Libraries imported for the first time by the engine (e.g.
onnxruntime) are part of its cost. ``peak_gpu_mem_mb`` is the growth of
``torch.cuda.max_memory_allocated`` over the allocated memory just before
loading (PyTorch's allocator: eager, TorchScript and the TensorRT I/O buffers;
TensorRT and ONNX Runtime internal allocations are not in it).

Telemetry (``telemetry``): each format's windows of phase 2 run inside its own
:class:`agent.telemetry.device.DeviceRecorder` — NVML samples of the GPU for a
CUDA engine, this process's CPU time and RSS for a CPU one — so the windows of
the other formats, interleaved between them, are not counted."""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections.abc import Callable

import psutil

from agent import registry
from agent.bench.measure import Window, is_stable, measure_interleaved, paired_ratio, summarize
from agent.bench.options import BenchOptions
from agent.build.manifest import engine_name, load_manifest
from agent.config import AgentConfig
from agent.errors import AgentError
from agent.schema import BenchResult, BenchSettings, EngineRecord, ResultDocument
from agent.telemetry.device import DeviceRecorder

INPROCESS_FORMATS: tuple[str, ...] = ("eager", "torchscript", "onnx", "tensorrt", "pt2")


def release_memory() -> None:
    """Free what the previous engine left: Python garbage, then glibc's free lists."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class PeakRSS:
    """Sample this process's RSS in a thread; ``peak_mb``: the growth above the RSS at entry."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.proc = psutil.Process()
        self.interval = interval_s
        self.baseline = self.proc.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def peak_mb(self) -> float:
        return (self.peak - self.baseline) / 2**20


def _plan(opts: BenchOptions) -> list[tuple[str, list[tuple[str, EngineRecord | None]]]]:
    """[(model, [(format, record or None for eager)])], every check done before any run."""
    from agent.build.pipeline import validate_choices
    from agent.runners import check_files

    formats = validate_choices(opts.formats, INPROCESS_FORMATS, "format") if opts.formats else []
    if opts.rounds is not None and opts.rounds < 2:
        raise AgentError("--rounds must be >= 2 (the speedup interval needs two pairs)")
    if opts.precision not in ("fp32", "fp16"):
        raise AgentError(f"unknown precision {opts.precision!r}: use fp32 or fp16")
    if "tensorrt" in formats:
        from agent.exporters import tensorrt_status

        ok, why = tensorrt_status()
        if not ok:
            raise AgentError(f"--formats tensorrt: {why}")
    only_eager = bool(formats) and set(formats) == {"eager"}
    manifest = load_manifest(opts.engines_dir, missing_ok=only_eager)
    for m in opts.models:
        registry.get(m)
    models = list(dict.fromkeys(opts.models)) or list(dict.fromkeys(
        r.model for r in manifest.engines.values()))
    if not models:
        raise AgentError(f"no engines in {opts.engines_dir}: build some with `agent build-engines` "
                         "or name --models")
    explicit = bool(formats)
    plan = []
    for m in models:
        fmts = formats or ["eager"] + [
            f for f in INPROCESS_FORMATS[1:]
            if engine_name(m, f, opts.precision) in manifest.engines]
        items: list[tuple[str, EngineRecord | None]] = []
        for f in fmts:
            if f == "eager":
                items.append((f, None))
                continue
            name = engine_name(m, f, opts.precision)
            rec = manifest.engines.get(name)
            if rec is None:
                raise AgentError(f"no {name} engine in {opts.engines_dir}: build it with "
                                 f"`agent build-engines --models {m} --formats {f} --engines {opts.engines_dir}`")
            if not rec.ok:
                if not explicit:
                    continue
                why = rec.verification.message if rec.verification else "not verified"
                raise AgentError(f"engine {name} failed verification ({why}); it is not benchmarked")
            too_big = [b for b in opts.batch_sizes if b > rec.max_batch]
            if too_big:
                raise AgentError(f"batch size {max(too_big)} is above {name}'s max batch {rec.max_batch}; "
                                 f"rebuild with --max-batch {max(too_big)}")
            problem = check_files(rec, opts.engines_dir)
            if problem:
                raise AgentError(f"engine {name} in {opts.engines_dir}: {problem}; "
                                 "rerun `agent build-engines` to rebuild it")
            items.append((f, rec))
        plan.append((m, items))
    return plan


def window_runner(runner, prepared, opts: BenchOptions) -> Callable[[], Window]:
    """A function running one measurement window of ``runner`` on ``prepared``."""
    clock = time.perf_counter

    def window() -> Window:
        lat: list[float] = []
        start = clock()
        if opts.iterations:
            for _ in range(opts.iterations):
                t = clock()
                runner.infer(prepared)
                lat.append(clock() - t)
        else:
            while clock() - start < opts.window_seconds:
                t = clock()
                runner.infer(prepared)
                lat.append(clock() - t)
        return Window(lat, clock() - start)

    return window


def recorded(window: Callable[[], Window], recorder: DeviceRecorder) -> Callable[[], Window]:
    """``window`` with the device sampled while it runs (only this format's windows count)."""
    def run() -> Window:
        with recorder:
            return window()

    return run


def load_and_warm(model: str, rec: EngineRecord | None, opts: BenchOptions, device: str):
    """(runner, {batch: prepared input}): loaded, warmed up, one window run per batch."""
    from agent.build.verify import random_batch
    from agent.runners import eager_runner, load_runner

    if rec is None:
        runner = eager_runner(model, precision=opts.precision, device=device)
    else:
        runner = load_runner(rec, opts.engines_dir, device=device, check_hashes=False)
    if opts.input == "images":  # each request: decode + preprocess the images, then the engine
        from agent.classify.runner import ImageRunner

        runner = ImageRunner(runner, model, opts.image_payloads())
    inputs = {}
    for b in opts.batch_sizes:
        runner.check_batch(b)
        inputs[b] = runner.prepare(random_batch(b, runner.input_shape))
        for _ in range(opts.warmup):
            runner.infer(inputs[b])
        window_runner(runner, inputs[b], opts)()
    return runner, inputs


def run_inprocess(opts: BenchOptions, config: AgentConfig) -> ResultDocument:
    from agent.facts import node_facts
    from agent.runners import default_device
    from agent.ui import progress

    plan = _plan(opts)
    device = default_device()
    if opts.precision == "fp16" and device != "cuda":
        raise AgentError("--precision fp16 needs a CUDA GPU and this node has none")
    import torch

    on_gpu = device == "cuda"
    results: list[BenchResult] = []
    peak_load = os.getloadavg()[0]
    total = sum(len(items) + len(opts.batch_sizes) for _, items in plan)
    with progress() as p:
        task = p.add_task("benchmarking", total=total)
        for model, items in plan:
            runners, inputs, host_mb, gpu_mb = {}, {}, {}, {}
            for fmt, rec in items:  # phase 1: load, warm up, memory of each engine alone
                p.update(task, description=f"{model} {fmt}: loading")
                if on_gpu:
                    torch.cuda.empty_cache()
                    gpu_base = torch.cuda.memory_allocated()
                    torch.cuda.reset_peak_memory_stats()
                release_memory()
                with PeakRSS() as mem:
                    runners[fmt], inputs[fmt] = load_and_warm(model, rec, opts, device)
                host_mb[fmt] = round(mem.peak_mb, 1)
                gpu_mb[fmt] = (round((torch.cuda.max_memory_allocated() - gpu_base) / 2**20, 1)
                               if on_gpu else None)
                p.advance(task)
            for b in opts.batch_sizes:  # phase 2: interleaved rounds
                p.update(task, description=f"{model} batch {b}: {' / '.join(runners)} interleaved")
                recorders = {f: DeviceRecorder(gpu=r.device == "cuda") for f, r in runners.items()}
                windows = measure_interleaved(
                    {f: recorded(window_runner(r, inputs[f][b], opts), recorders[f]) for f, r in runners.items()},
                    opts.stability_pct, opts.max_windows, opts.rounds)
                peak_load = max(peak_load, os.getloadavg()[0])
                for fmt, ws in windows.items():
                    m = summarize(ws, b, is_stable(ws, opts.stability_pct))
                    results.append(BenchResult(
                        model=model, format=fmt, precision=opts.precision, device=runners[fmt].device,
                        batch_size=b, latency_ms=m.latency_ms, throughput_ips=m.throughput_ips,
                        requests=m.requests, windows=m.windows, stable=m.stable, cv_pct=m.cv_pct,
                        peak_host_mem_mb=host_mb[fmt], peak_gpu_mem_mb=gpu_mb[fmt],
                        telemetry=recorders[fmt].result(), input="image" if opts.input == "images" else "tensor",
                        **_speedup(fmt, ws, windows.get("eager")),
                    ))
                p.advance(task)
            del runners, inputs
        p.update(task, description="done")
    release_memory()
    if peak_load > (os.cpu_count() or 1):
        print(f"warning: load average {peak_load:.1f} on {os.cpu_count()} CPUs during the bench: "
              "PyTorch's OpenMP threads (eager, TorchScript) slow down out of proportion on "
              "oversubscribed CPUs, so speedups over eager are inflated; measure on a quiet node",
              file=sys.stderr)
    return ResultDocument(
        target="inprocess",
        node=node_facts(config),
        settings=BenchSettings(
            warmup=opts.warmup,
            window_seconds=None if opts.iterations else opts.window_seconds,
            iterations=opts.iterations, stability_pct=opts.stability_pct,
            max_windows=opts.max_windows, omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
        ),
        results=results,
    )


def _speedup(fmt: str, windows: list[Window], eager: list[Window] | None) -> dict:
    """speedup_vs_eager and its interval from the paired (same-round) windows."""
    if eager is None:
        return {}
    if fmt == "eager":
        return {"speedup_vs_eager": 1.0}
    r = paired_ratio([w.throughput for w in windows], [w.throughput for w in eager])
    rnd = (lambda x: None if x is None else round(x, 3))
    return {"speedup_vs_eager": rnd(r.estimate), "speedup_ci_low": rnd(r.low),
            "speedup_ci_high": rnd(r.high), "speedup_pairs": r.pairs}
