"""Benchmark through Triton: the served engines, driven with tritonclient.

For each served model (an engine of the manifest that the server has READY),
batch size and concurrency, ``concurrency`` worker threads — each with its own
client, HTTP or gRPC — keep exactly that many requests in flight, as
perf_analyzer's concurrency mode does (tritonclient releases the GIL while it
waits on the network, so the client is not the bottleneck). As perf_analyzer
counts them, a window's requests are those that *complete* inside it, each
with its latency from building the request to the decoded response; they feed
the stable-window logic of :mod:`agent.bench.measure`. Triton's statistics
API, read at each window's start and end, gives the server-side breakdown per
request (queue, compute input/infer/output) over exactly the windows the
figures use (``BenchResult.server``); the client's own phases, timed around
each request, give ``BenchResult.client`` (perf_analyzer's Client Send /
Client Recv, see :class:`Request`). Triton's Prometheus endpoint, read right
at each window's edges (its gauges in between), gives ``server_metrics`` with
the client's completions over the same span beside the server's count; the
server's process tree (psutil, or NVML on a GPU), when this node runs it,
gives ``telemetry`` (:func:`telemetry_sources`, :mod:`agent.telemetry`).

Before measuring, one served request per model is checked against the engine
run in-process (``agent.runners``) with :func:`agent.build.verify.verify` and the
engine's own tolerances: a served model that answers differently fails the
benchmark, by name."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np

from agent.bench.measure import STABLE_WINDOWS, Window, measure_until_stable
from agent.bench.options import BenchOptions
from agent.config import AgentConfig
from agent.errors import AgentError
from agent.runners import Runner
from agent.schema import (
    BenchResult,
    BenchSettings,
    ClientBreakdown,
    EngineRecord,
    ResultDocument,
    ServerBreakdown,
)
from agent.triton.client import (
    call,
    connect,
    inference_statistics,
    model_config,
    protocol_module,
    repository_index,
    server_metadata,
)
from agent.triton.repo import wire_dtype


@dataclass
class Served:
    """One served model: its engine record and Triton's config of it."""

    record: EngineRecord
    input_name: str
    output_name: str
    datatype: str
    device: str  # cpu | cuda (from the instance group kind)
    max_batch: int
    triton_name: str = ""  # the model Triton is asked for: "" = the engine's own, else its classifier ensemble
    images: tuple[bytes, ...] = ()  # --input images: the encoded images the requests carry

    @property
    def name(self) -> str:
        return self.triton_name or self.record.name

    def payload(self, batch: int) -> np.ndarray:
        """A request's input: a random tensor batch, or ``batch`` encoded images (BYTES [batch, 1])."""
        if self.images:
            from agent.classify.imagenet import image_batch

            return image_batch(list(self.images), batch)
        from agent.build.verify import random_batch

        return random_batch(batch, tuple(self.record.inputs[0].shape[1:]))


class Request:
    """A prepared inference request for one client; each call records its client phases.

    HTTP: ``send_s`` = building the request body (JSON header + binary tensors,
    ``generate_request_body``) until it is handed to the connection; ``recv_s`` =
    reading the response body and decoding it (``parse_response_body`` +
    ``as_numpy``). The time between is the network and the server ("response
    wait"). gRPC: the stub serialises and sends inside one call, so only
    ``recv_s`` (decoding the output to an array) is measured; ``send_s`` is None."""

    def __init__(self, client, protocol: str, served: Served, x: np.ndarray) -> None:
        mod = protocol_module(protocol)
        self.client = client
        self.protocol = protocol
        self.model = served.name
        inp = mod.InferInput(served.input_name, list(x.shape), served.datatype)
        if protocol == "http":
            inp.set_data_from_numpy(x, binary_data=True)
            out = mod.InferRequestedOutput(served.output_name, binary_data=True)
        else:
            inp.set_data_from_numpy(x)
            out = mod.InferRequestedOutput(served.output_name)
        self.inputs = [inp]
        self.outputs = [out]
        self.output_name = served.output_name
        self.uri = f"v2/models/{quote(self.model)}/infer"
        self.send_s: float | None = None
        self.recv_s = 0.0

    def __call__(self) -> np.ndarray:
        out = self._http() if self.protocol == "http" else self._grpc()
        if out is None or out.size == 0:
            raise AgentError(f"{self.model}: Triton returned an empty output (numpy >= 2 in the server's "
                             "python environment?)")
        return out

    def _http(self) -> np.ndarray:
        from tritonclient.http import InferenceServerClient

        clock = time.perf_counter
        t0 = clock()
        body, json_size = InferenceServerClient.generate_request_body(self.inputs, outputs=self.outputs)
        headers = {"Inference-Header-Content-Length": json_size} if json_size is not None else None
        t1 = clock()
        response = self.client._post(self.uri, body, headers, None)  # tritonclient's own POST
        t2 = clock()
        data = response.read()
        if response.status_code != 200:
            _raise_http_error(response.status_code, data)
        length = response.get("Inference-Header-Content-Length")
        result = InferenceServerClient.parse_response_body(
            data, header_length=int(length) if length is not None else None,
            content_encoding=response.get("Content-Encoding"))
        out = result.as_numpy(self.output_name)
        self.send_s, self.recv_s = t1 - t0, time.perf_counter() - t2
        return out

    def _grpc(self) -> np.ndarray:
        res = self.client.infer(self.model, self.inputs, outputs=self.outputs)
        t2 = time.perf_counter()
        out = res.as_numpy(self.output_name)
        self.recv_s = time.perf_counter() - t2
        return out


def _raise_http_error(status: int, data: bytes) -> None:
    from tritonclient.utils import InferenceServerException

    try:
        msg = json.loads(data).get("error") or data.decode(errors="replace")
    except ValueError:
        msg = data.decode(errors="replace")
    raise InferenceServerException(msg=msg, status=str(status))


class TritonRunner(Runner):
    """A served model behind the Runner interface, so that verification can compare it."""

    def __init__(self, client, protocol: str, served: Served) -> None:
        r = served.record
        super().__init__(f"{r.name} (served)", served.max_batch, tuple(r.inputs[0].shape[1:]))
        self.client, self.protocol, self.served = client, protocol, served

    def infer(self, prepared: Any) -> Any:
        return call(f"inference on {self.served.name}",
                     Request(self.client, self.protocol, self.served, prepared))


# ------------------------------------------------------------------ load loop
@dataclass
class WindowLog:
    """What one window saw beyond its latencies: the client phases summed over its
    requests, and Triton's statistics read at its start and end (None when not read)."""

    requests: int
    send_s: float | None
    recv_s: float
    stats_before: dict | None
    stats_after: dict | None
    telemetry: tuple = ()  # the window's recorders (agent.telemetry): Triton's metrics, the server's device


class LoadGenerator:
    """``concurrency`` threads, each with its own client, keeping one request in flight.

    A window counts the requests that *complete* inside it, each with its own
    latency (send to response decoded), and divides by the window's wall time:
    perf_analyzer's time-window rule. ``stats`` (a callable returning Triton's
    statistics of the model) is read at each window's start and end, so the
    server's counters cover the same span as the client's."""

    def __init__(self, url: str, protocol: str, served: Served, batch: int, concurrency: int,
                 stats=None, telemetry=None) -> None:
        x = served.payload(batch)
        self.requests = [Request(connect(url, protocol), protocol, served, x) for _ in range(concurrency)]
        self.stats = stats
        self.telemetry = telemetry  # () -> recorders entered for each window (agent.telemetry)
        self.lock = threading.Lock()
        self.done: list[tuple[float, float, float | None, float]] = []  # (end, latency, send, recv)
        self.completions: list[float] = []  # every completion time, for the telemetry spans (never cleared)
        self.log: list[WindowLog] = []  # one per window that saw requests
        self.error: BaseException | None = None
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(r,), daemon=True) for r in self.requests]

    def _loop(self, request: Request) -> None:
        clock = time.perf_counter
        while not self.stop_event.is_set():
            t = clock()
            try:
                request()
            except BaseException as e:  # surfaces in the main thread
                self.error = e
                self.stop_event.set()
                return
            end = clock()
            with self.lock:
                self.done.append((end, end - t, request.send_s, request.recv_s))
                self.completions.append(end)

    @property
    def count(self) -> int:
        """Requests answered so far."""
        return len(self.completions)

    def __enter__(self) -> LoadGenerator:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=60)
        for r in self.requests:
            try:
                r.client.close()
            except Exception:
                pass

    def _check(self) -> None:
        if self.error is not None:
            e = self.error
            raise e if isinstance(e, AgentError) else AgentError(
                f"{self.requests[0].model}: request failed: {' '.join(str(e).split())[:300]}")

    def wait_for(self, n: int, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count < n:
            self._check()
            if time.monotonic() > deadline:
                raise AgentError(f"{self.requests[0].model}: only {self.count}/{n} requests answered in {timeout:.0f}s")
            time.sleep(0.005)

    def window(self, seconds: float, iterations: int | None) -> Window:
        import contextlib

        with contextlib.ExitStack() as stack:
            recorders = tuple(stack.enter_context(r) for r in (self.telemetry() if self.telemetry else ()))
            return self._window(seconds, iterations, recorders)

    def _window(self, seconds: float, iterations: int | None, recorders: tuple) -> Window:
        clock = time.perf_counter
        marked = [r for r in recorders if getattr(r, "marks", False)]  # counters read at the edges
        before = self.stats() if self.stats else None
        with self.lock:
            self.done.clear()
        for r in marked:
            r.start()
        with self.lock:
            start_count = self.count
            start = clock()
        if iterations:
            self.wait_for(start_count + iterations)
        else:
            while clock() - start < seconds:
                self._check()
                time.sleep(min(0.02, seconds / 10))
        with self.lock:
            end = clock()
            done = [d for d in self.done if start <= d[0] <= end]
        for r in marked:
            r.stop()
        after = self.stats() if self.stats else None
        self._check()
        if done:
            sends = [d[2] for d in done]
            self.log.append(WindowLog(len(done), None if None in sends else sum(sends), sum(d[3] for d in done),
                                      before, after, recorders))
        return Window([d[1] for d in done], end - start)

    def used(self, n: int) -> list[WindowLog]:
        """The logs of the last ``n`` windows (those the measurement's statistics use)."""
        return self.log[-n:]


def window_telemetry(logs: list[WindowLog], completions: list[float]) -> dict:
    """server_metrics and telemetry over the windows a measurement used. The client's
    completions over each Prometheus span are counted from ``completions`` once the load
    generator has stopped: a worker that finished a request but had not yet logged it
    (the GIL is busy parsing a scrape) would otherwise be missed."""
    from agent.telemetry import device, triton_metrics

    recs = [r for w in logs for r in w.telemetry]
    for r in recs:
        if isinstance(r, triton_metrics.ServerMetricsRecorder) and r.marks:
            r.count_client(completions)
    return {"server_metrics": triton_metrics.combined(
                [r for r in recs if isinstance(r, triton_metrics.ServerMetricsRecorder)]),
            "telemetry": device.combined([r for r in recs if isinstance(r, device.DeviceRecorder)])}


def client_breakdown(logs: list[WindowLog]) -> ClientBreakdown | None:
    n = sum(w.requests for w in logs)
    if n == 0:
        return None
    sends = [w.send_s for w in logs]
    return ClientBreakdown(send_us=None if None in sends else sum(sends) / n * 1e6,
                           recv_us=sum(w.recv_s for w in logs) / n * 1e6)


# -------------------------------------------------------------- server stats
def _stats(client, protocol: str, model: str) -> dict[str, tuple[int, int]]:
    data = inference_statistics(client, protocol, model)
    entry = (data.get("model_stats") or [{}])[0]
    inf = entry.get("inference_stats", {})
    return {k: (int(inf.get(k, {}).get("count", 0)), int(inf.get(k, {}).get("ns", 0)))
            for k in ("success", "queue", "compute_input", "compute_infer", "compute_output")}


def _delta(before: dict, after: dict) -> dict[str, tuple[int, int]]:
    return {k: (after[k][0] - before[k][0], after[k][1] - before[k][1]) for k in after}


def breakdown(before: dict, after: dict) -> ServerBreakdown | None:
    """Per-request averages between two reads of the statistics (Triton accumulates
    queue and compute time per request, a batched request carrying its batch's time)."""
    return _breakdown(_delta(before, after))


def window_breakdown(logs: list[WindowLog]) -> ServerBreakdown | None:
    """The server's view of exactly the measured windows: their deltas summed (the gaps
    between windows, where the client counts nothing, are left out as well)."""
    deltas = [_delta(w.stats_before, w.stats_after) for w in logs if w.stats_before and w.stats_after]
    if not deltas:
        return None
    return _breakdown({k: (sum(d[k][0] for d in deltas), sum(d[k][1] for d in deltas)) for k in deltas[0]})


def _breakdown(d: dict[str, tuple[int, int]]) -> ServerBreakdown | None:
    n = d["success"][0]
    if n <= 0:
        return None

    def us(key: str) -> float:
        return d[key][1] / n / 1e3

    return ServerBreakdown(queue_us=us("queue"), compute_input_us=us("compute_input"),
                           compute_infer_us=us("compute_infer"), compute_output_us=us("compute_output"),
                           request_count=n)


# ---------------------------------------------------------------------- plan
def _served_classifiers(client, protocol: str, opts: BenchOptions, engines: dict, ready: set[str]) -> list[Served]:
    """--input images: each selected model's ``<model>_classifier`` ensemble, with the engine its
    second step runs (the result is reported under that engine's format)."""
    from agent.triton.classifier import classifier_name

    models = opts.models or sorted({r.model for r in engines.values()})
    images = tuple(opts.image_payloads())
    out = []
    for m in models:
        name = classifier_name(m)
        if name not in ready:
            continue
        cfg = model_config(client, protocol, name)
        steps = cfg.get("ensemble_scheduling", {}).get("step", [])
        rec = engines.get(steps[1]["model_name"]) if len(steps) > 1 else None
        if rec is None or (opts.formats and rec.format not in opts.formats) or rec.precision != opts.precision:
            continue
        out.append(Served(record=rec, input_name="IMAGE", output_name="PROBS", datatype="BYTES", device="cpu",
                          max_batch=int(cfg.get("max_batch_size") or 0) or rec.max_batch,
                          triton_name=name, images=images))
    if not out:
        raise AgentError(f"the server at {opts.url} serves no classifier of {', '.join(models)} "
                         "(`agent repo --classifiers`, then `agent serve reload`)")
    return out


def _served_models(client, protocol: str, opts: BenchOptions) -> list[Served]:
    from agent.build.manifest import load_manifest

    manifest = load_manifest(opts.engines_dir, missing_ok=False)
    index = repository_index(client, protocol)
    ready = {m["name"] for m in index if m.get("state") == "READY"}
    if not ready:
        raise AgentError(f"the Triton server at {opts.url} serves no model (agent serve start / reload)")
    if opts.input == "images":
        return _checked_batches(_served_classifiers(client, protocol, opts, manifest.engines, ready), opts)
    out: list[Served] = []
    for name, rec in sorted(manifest.engines.items()):
        if opts.models and rec.model not in opts.models:
            continue
        if opts.formats and rec.format not in opts.formats:
            continue
        if rec.precision != opts.precision or name not in ready:
            continue
        cfg = model_config(client, protocol, name)
        groups = cfg.get("instance_group") or [{}]
        dtype = rec.inputs[0].dtype
        out.append(Served(record=rec, input_name=cfg["input"][0]["name"], output_name=cfg["output"][0]["name"],
                          datatype=wire_dtype(dtype),
                          device="cuda" if groups[0].get("kind") == "KIND_GPU" else "cpu",
                          max_batch=int(cfg.get("max_batch_size") or 0) or rec.max_batch))
    if not out:
        wanted = ", ".join(opts.models) or "any model"
        raise AgentError(f"the server at {opts.url} serves no {opts.precision} engine of {wanted} from "
                         f"{opts.engines_dir}/manifest.json (serving: {', '.join(sorted(ready))})")
    _checked_batches(out, opts)
    if opts.models:
        missing = sorted(set(opts.models) - {s.record.model for s in out})
        if missing:
            raise AgentError(f"the server at {opts.url} does not serve {', '.join(missing)}")
    return out


def _checked_batches(out: list[Served], opts: BenchOptions) -> list[Served]:
    for s in out:
        too_big = [b for b in opts.batch_sizes if b > s.max_batch]
        if too_big:
            raise AgentError(f"batch size {max(too_big)} is above served {s.name}'s max batch {s.max_batch}")
    return out


def check_served(client, protocol: str, served: Served, engines_dir) -> None:
    """One served request equals the in-process engine within the engine's tolerance
    (a classifier: its probabilities equal preprocessing + the engine + softmax here)."""
    from agent.build.verify import verify
    from agent.runners import load_runner

    rec = served.record
    engine = load_runner(rec, engines_dir, device="cpu" if rec.device == "cpu" else "cuda")
    if served.images:
        from agent.classify.imagenet import softmax
        from agent.classify.runner import ImageRunner

        x = served.payload(1)
        got = call(f"inference on {served.name}", Request(client, protocol, served, x))
        local = ImageRunner(engine, rec.model, list(served.images))
        want = softmax(local.to_numpy(local.infer(x)))
        rtol = rec.verification.rtol if rec.verification else 1e-3
        if np.abs(got - want).max() > rtol * np.abs(want).max():
            raise AgentError(f"served {served.name} does not match preprocessing + {rec.name} in-process: "
                             f"max difference {np.abs(got - want).max():.3g}")
        return
    v = rec.verification
    result = verify(TritonRunner(client, protocol, served), engine, [1], rec.precision,
                    rtol=v.rtol if v else None, min_top1=v.min_top1 if v else None)
    if not result.passed:
        raise AgentError(f"served {rec.name} does not match the in-process engine: {result.message}")


@dataclass(frozen=True)
class TelemetrySources:
    """Where a served measurement's telemetry comes from: Triton's metrics endpoint (None:
    unreachable) and, for a server this node runs, its process (psutil / NVML)."""

    metrics_url: str | None
    server_pid: int | None

    def recorders(self, served: Served) -> list:
        from agent.telemetry.device import DeviceRecorder
        from agent.telemetry.triton_metrics import ServerMetricsRecorder

        out: list = []
        if self.metrics_url:
            out.append(ServerMetricsRecorder(self.metrics_url, served.name, marks=True))
        if self.server_pid:
            out.append(DeviceRecorder(gpu=served.device == "cuda", pids=[self.server_pid]))
        return out


def telemetry_sources(opts: BenchOptions, config: AgentConfig) -> TelemetrySources:
    """``--metrics-url``, else the server ``agent serve`` started (its state file names its
    ports and pid) when it is the one at ``--url``, else the ``--url`` host on Triton's
    default metrics port. An endpoint that does not answer now is left out, with a warning."""
    import sys

    from agent.telemetry.triton_metrics import metrics_url, scrape
    from agent.triton.server import read_state, serving_pid

    host, _, port = opts.url.split("://", 1)[-1].rstrip("/").rpartition(":")
    url, pid = opts.metrics_url, None
    state = read_state(config.state_dir / "triton")  # agent serve's default state directory
    ports = (state or {}).get("ports", {})
    if str(ports.get(opts.protocol)) == port and host in ("127.0.0.1", "localhost", "::1"):
        url = url or (f"127.0.0.1:{ports['metrics']}" if "metrics" in ports else None)
        pid = serving_pid(state)
    url = url or f"{host}:8002"
    try:
        scrape(metrics_url(url), timeout=3)
    except AgentError as e:
        print(f"warning: no server metrics in the results: {e}", file=sys.stderr)
        url = None
    return TelemetrySources(url, pid)


def served_models_checked(client, opts: BenchOptions, config: AgentConfig):
    """(the served models, the node's facts): the server must be live; every served model of
    the selection is checked against its engine in-process first; the facts carry the
    server's Triton version."""
    from agent.facts import node_facts

    if not call("server live", client.is_server_live):
        raise AgentError(f"the Triton server at {opts.url} is not live")
    meta = server_metadata(client, opts.protocol)
    served = _served_models(client, opts.protocol, opts)
    for s in served:
        check_served(client, opts.protocol, s, opts.engines_dir)
    node = node_facts(config)
    node.triton_version = meta.get("version") or node.triton_version
    return served, node


def run_served(opts: BenchOptions, config: AgentConfig) -> ResultDocument:
    from agent.ui import progress

    if opts.protocol not in ("http", "grpc"):
        raise AgentError(f"unknown protocol {opts.protocol!r}: use http or grpc")
    client = connect(opts.url, opts.protocol)
    try:
        served, node = served_models_checked(client, opts, config)
        sources = telemetry_sources(opts, config)
        results: list[BenchResult] = []
        steps = [(s, b, c) for s in served for b in opts.batch_sizes for c in opts.concurrency]
        with progress() as bar:
            task = bar.add_task("serving benchmark", total=len(steps))
            for s, batch, conc in steps:
                bar.update(task, description=f"{s.name} batch {batch} concurrency {conc}")
                results.append(measure_point(client, opts, s, sources, batch, conc))
                bar.advance(task)
    finally:
        try:
            client.close()
        except Exception:
            pass
    return ResultDocument(target="triton", node=node, settings=served_settings(opts), results=results)


def measure_point(client, opts: BenchOptions, s: Served, sources: TelemetrySources, batch: int,
                  concurrency: int) -> BenchResult:
    """One served point: ``concurrency`` clients keep requests of ``batch`` in flight until
    the windows are stable; its result carries the server's breakdown, the client's phases
    and the telemetry of the windows used. ``client`` reads Triton's statistics."""
    rec = s.record
    stats = lambda: _stats(client, opts.protocol, s.name)  # noqa: E731
    with LoadGenerator(opts.url, opts.protocol, s, batch, concurrency, stats=stats,
                       telemetry=lambda: sources.recorders(s)) as load:
        load.wait_for(max(opts.warmup, 1) * concurrency)
        m = measure_until_stable(lambda: load.window(opts.window_seconds, opts.iterations),
                                 batch, opts.stability_pct, opts.max_windows)
    used = load.used(STABLE_WINDOWS)
    return BenchResult(
        model=rec.model, format=rec.format, precision=rec.precision, device=s.device,
        batch_size=batch, concurrency=concurrency, triton_model=s.name, protocol=opts.protocol,
        input="image" if s.images else "tensor",
        latency_ms=m.latency_ms, throughput_ips=m.throughput_ips, requests=m.requests,
        windows=m.windows, stable=m.stable, cv_pct=m.cv_pct, server=window_breakdown(used),
        client=client_breakdown(used), **window_telemetry(used, load.completions),
    )


def served_settings(opts: BenchOptions) -> BenchSettings:
    """The settings a served measurement ran with (a result document's ``settings``)."""
    return BenchSettings(warmup=opts.warmup, window_seconds=None if opts.iterations else opts.window_seconds,
                         iterations=opts.iterations, stability_pct=opts.stability_pct,
                         max_windows=opts.max_windows, url=opts.url)
