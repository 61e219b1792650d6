"""The versioned documents the agent writes and the collector ingests.

One place for each: the engine manifest (``manifest.json`` in a build
directory) and the benchmark result document (``agent bench --json``, pushed
to the collector). Both forbid unknown fields so that a typo or a document
from another version is refused, not half-read. Bump ``*_SCHEMA_VERSION`` on
any change; a minor bump only adds optional fields, so the collector still
accepts every document of the same major version (``RESULT_SCHEMA_VERSIONS``)
and refuses others with the versions it takes.

Result versions:
- 1.0: concurrency sweeps (in-process and served);
- 1.1: adds ``cv_pct`` (stability of the windows used), the interleaved speedup's
  confidence interval (``speedup_ci_low/high``, ``speedup_pairs``), ``scenario``
  (an MLPerf LoadGen run: verdict, metric, settings, log directory),
  ``server_metrics`` (Triton's Prometheus counters and gauges per window) and
  ``telemetry`` (NVML / psutil samples during the windows);
- 1.2: adds ``tuning`` (a point of ``agent tune``'s configuration search: the serving
  configuration it was measured with, the search, the p99 budget, whether it was chosen) and
  ``server_metrics.client_requests_max`` (the client's count over the widest span the server's
  counters may cover; ``client_requests`` is the narrowest)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

MANIFEST_SCHEMA_VERSION = "1.1"  # 1.1: the pt2 format (torch.export + AOTInductor); 1.0 still read
RESULT_SCHEMA_VERSION = "1.2"
RESULT_SCHEMA_VERSIONS = ("1.0", "1.1", "1.2")  # what the collector accepts

Format = Literal["eager", "torchscript", "onnx", "tensorrt", "pt2"]  # pt2: result schema 1.1
EngineFormat = Literal["torchscript", "onnx", "tensorrt", "pt2"]
Precision = Literal["fp32", "fp16"]
Target = Literal["inprocess", "triton"]
Scenario = Literal["single-stream", "multi-stream", "offline", "server"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


# ------------------------------------------------------------ checked values
# A result document crosses a trust boundary (node -> collector -> report), so
# its values are checked, not only its types: the collector answers 422 to a
# document that breaks any of these rules, on SQLite and PostgreSQL alike
# (the bounds below are also what the collector's columns can hold).
MAX_CLOCK_SKEW = timedelta(minutes=5)  # created_at may be this far ahead of the receiver's clock
MAX_INT = 2**31 - 1  # PostgreSQL INTEGER
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"  # node names, model names, ids: no spaces, quotes, slashes

Name = Annotated[str, Field(min_length=1, max_length=128, pattern=NAME_PATTERN)]
DocumentId = Annotated[str, Field(min_length=1, max_length=64, pattern=NAME_PATTERN)]
Text = Annotated[str, Field(max_length=255)]
Short = Annotated[str, Field(max_length=64)]
Count = Annotated[int, Field(ge=0, le=MAX_INT)]
Positive = Annotated[int, Field(ge=1, le=MAX_INT)]
NonNegative = Annotated[float, Field(ge=0)]


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_JSON_ESCAPE = re.compile(rb"\\(u[0-9a-fA-F]{4}|.)")  # one escape sequence of JSON text
CONTROL_CHECKED = "control_characters_checked"  # validation context: the JSON text was already scanned


def json_text_has_control_character(text: bytes) -> bool:
    """Whether JSON text holds a control character in a string. Strict JSON cannot hold one
    raw (DEL excepted), only as an escape: scan the escape sequences, each backslash pair
    consumed as a unit so that an escaped backslash is never misread."""
    if b"\x7f" in text:
        return True
    for m in _JSON_ESCAPE.finditer(text):
        e = m.group(1)
        if e in (b"b", b"t", b"n", b"f", b"r") or (e[:1] == b"u" and int(e[1:], 16) < 32) \
                or e.lower() == b"u007f":
            return True
    return False


def has_control_character(value: Any) -> bool:
    """Fast check over a whole structure at C speed: json.dumps escapes every control
    character except DEL, then the escapes are scanned."""
    import json

    return json_text_has_control_character(json.dumps(value, default=str).encode())


def _control_character(value: Any, path: str = "") -> str | None:
    """Path of the first string (key or value) holding a control character (NUL included)."""
    stack = [(path, value)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, str):
            if _CONTROL.search(v):
                return where or "document"
        elif isinstance(v, dict):
            for k, x in v.items():
                if isinstance(k, str) and _CONTROL.search(k):
                    return f"{where}.{k!r}".lstrip(".")
                stack.append((f"{where}.{k}".lstrip("."), x))
        elif isinstance(v, list):
            stack.extend((f"{where}.{i}", x) for i, x in enumerate(v))
    return None


class Checked(Strict):
    """Result-side models: no NaN/infinity anywhere."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


# --------------------------------------------------------------------- manifest
class TensorSpec(Strict):
    name: str
    dtype: str  # numpy dtype name, e.g. "float32"
    shape: list[int]  # -1 for the dynamic batch axis


class ToolVersions(Strict):
    torch: str | None = None
    torchvision: str | None = None
    onnx: str | None = None
    onnxruntime: str | None = None
    tensorrt: str | None = None
    cuda: str | None = None
    cudnn: str | None = None
    gpu_name: str | None = None
    gpu_compute_capability: str | None = None


class Verification(Strict):
    """Engine output vs eager PyTorch on the same random inputs."""

    passed: bool
    batch_sizes: list[int]
    max_rel_error: float  # max |engine - eager| / max |eager|, over all checked batches
    max_abs_error: float
    top1_agreement: float  # fraction of samples whose argmax agrees
    rtol: float
    min_top1: float
    message: str = ""


class EngineRecord(Strict):
    model: str
    format: EngineFormat
    precision: Precision
    device: Literal["cpu", "cuda"]
    max_batch: int
    files: dict[str, str]  # relative path -> sha256 (all files of the engine)
    size_bytes: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    opset: int | None = None
    build_seconds: float
    build_key: str  # hash of everything that determines the artifact
    tools: ToolVersions
    verification: Verification | None = None
    built_at: datetime = Field(default_factory=utcnow)

    @property
    def name(self) -> str:
        """Triton model name: ``<model>_<format>[_<precision>]`` (fp32 implied)."""
        suffix = "" if self.precision == "fp32" else f"_{self.precision}"
        return f"{self.model}_{self.format}{suffix}"

    @property
    def ok(self) -> bool:
        return self.verification is not None and self.verification.passed


class Manifest(Strict):
    schema_version: Literal["1.0", "1.1"] = MANIFEST_SCHEMA_VERSION
    engines: dict[str, EngineRecord] = {}  # key: EngineRecord.name
    updated_at: datetime = Field(default_factory=utcnow)


# ---------------------------------------------------------------------- results
class NodeFacts(Checked):
    """Who measured: identity from the agent config, facts probed on the node."""

    node_name: Name
    hostname: Annotated[str, Field(min_length=1, max_length=255)]
    cloud: Short | None = None
    region: Short | None = None
    instance_type: Annotated[str, Field(max_length=128)] | None = None
    price_per_hour: NonNegative | None = None  # USD, from the agent config
    labels: dict[Short, Text] = Field(default={}, max_length=64)
    os: Text | None = None
    cpu: Text | None = None
    cpu_count: Count | None = None
    memory_gb: NonNegative | None = None
    gpu_name: Annotated[str, Field(max_length=128)] | None = None
    gpu_count: Count = 0
    gpu_compute_capability: Short | None = None
    driver_version: Short | None = None
    cuda_version: Short | None = None
    cudnn_version: Short | None = None
    tensorrt_version: Short | None = None
    triton_version: Short | None = None
    torch_version: Short | None = None
    torchvision_version: Short | None = None
    onnxruntime_version: Short | None = None
    python_version: Short | None = None
    agent_version: Short | None = None


class LatencyStats(Checked):
    """Milliseconds per request (one request = one batch); percentiles in order."""

    p50: NonNegative
    p90: NonNegative
    p95: NonNegative
    p99: NonNegative
    mean: NonNegative
    min: NonNegative
    max: NonNegative
    std: NonNegative

    @model_validator(mode="after")
    def _ordered(self) -> LatencyStats:
        order = [("min", self.min), ("p50", self.p50), ("p90", self.p90), ("p95", self.p95),
                 ("p99", self.p99), ("max", self.max)]
        for (a, x), (b, y) in pairwise(order):
            if x > y * (1 + 1e-9) + 1e-12:  # interpolated percentiles may differ in the last bit
                raise ValueError(f"latency percentiles out of order: {a} {x:g} > {b} {y:g}")
        return self


class ServerBreakdown(Checked):
    """Per-request averages from Triton's statistics API (microseconds)."""

    queue_us: NonNegative
    compute_input_us: NonNegative
    compute_infer_us: NonNegative
    compute_output_us: NonNegative
    request_count: Count


class ClientBreakdown(Checked):
    """Per-request averages of the client's own phases (microseconds), as perf_analyzer's
    "Client Send" / "Client Recv": send = building and serialising the request until it
    is handed to the connection; recv = reading the response body and decoding it to
    arrays. None where the client library does not expose the phase (gRPC send)."""

    send_us: NonNegative | None = None
    recv_us: NonNegative | None = None


class ServerMetrics(Checked):
    """Triton's Prometheus endpoint over the measurement windows: counter deltas per
    request (``nv_inference_*``) and the mean of its gauges scraped during them
    (``nv_gpu_*`` on GPU servers, ``nv_cpu_*`` with ``--allow-cpu-metrics``)."""

    # request_success lies in [client_requests, client_requests_max] up to the requests in flight
    # at the spans' edges: Triton snapshots its counters somewhere between a scrape's sending
    # and the arrival of its answer
    request_success: Count
    client_requests: Count | None = None  # the client's completions surely inside the spans (answer arrived .. next scrape sent)
    client_requests_max: Count | None = None  # 1.2: ... possibly inside them (scrape sent .. answer arrived)
    request_failure: Count
    inference_count: Count  # samples (a batch-8 request counts 8)
    exec_count: Count  # model executions (after dynamic batching)
    request_us: NonNegative  # per request, end to end inside the server
    queue_us: NonNegative
    compute_input_us: NonNegative
    compute_infer_us: NonNegative
    compute_output_us: NonNegative
    gpu_utilization_pct: NonNegative | None = None
    gpu_memory_used_mb: NonNegative | None = None
    gpu_power_w: NonNegative | None = None
    cpu_utilization_pct: NonNegative | None = None  # the server machine's CPUs, 100 = all busy
    cpu_memory_used_mb: NonNegative | None = None
    scrapes: Count = 0  # gauge samples averaged


class DeviceTelemetry(Checked):
    """Sampled on the node during the measurement windows: NVML (``nvidia-ml-py``) for
    the GPU the engine ran on, psutil for the measuring process on a CPU node (its own
    CPU time: 100 % = one core busy) — means, except memory and temperature (peaks)."""

    source: Literal["nvml", "psutil"]
    samples: Count
    interval_ms: NonNegative
    gpu_utilization_pct: NonNegative | None = None
    gpu_memory_used_mb: NonNegative | None = None
    gpu_power_w: NonNegative | None = None
    gpu_power_max_w: NonNegative | None = None
    sm_clock_mhz: NonNegative | None = None
    gpu_temperature_c: NonNegative | None = None
    cpu_utilization_pct: NonNegative | None = None
    rss_mb: NonNegative | None = None


class ScenarioResult(Checked):
    """One MLPerf Inference scenario run by the official LoadGen (``mlcommons-loadgen``).

    ``metric`` is the scenario's MLPerf metric: ``samples_per_second`` (offline),
    ``scheduled_qps`` (server: the highest target QPS LoadGen called VALID at the
    latency bound), ``p90_latency_ms`` (single-stream) or ``p99_latency_ms``
    (multi-stream, per query of ``samples_per_query`` samples). INVALID runs keep
    LoadGen's reasons and are never ranked."""

    name: Scenario
    valid: bool
    invalid_reasons: Annotated[list[Text], Field(max_length=32)] = []
    metric: Literal["samples_per_second", "scheduled_qps", "p90_latency_ms", "p99_latency_ms"]
    metric_value: NonNegative
    samples_per_query: Positive = 1
    target_qps: NonNegative | None = None  # server: the QPS LoadGen scheduled; offline: expected QPS
    target_latency_ms: NonNegative | None = None  # server: the latency bound at latency_percentile
    latency_percentile: Annotated[float, Field(gt=0, le=100)] | None = None
    min_duration_ms: Count
    min_query_count: Count
    queries: Count  # queries LoadGen issued in the performance run
    samples: Count  # samples completed
    qps_tried: Annotated[list[NonNegative], Field(max_length=64)] = []  # server search, in order
    log_dir: Text | None = None  # mlperf_log_summary.txt / mlperf_log_detail.txt on the node
    loadgen_version: Short | None = None


class TuningPoint(Checked):
    """1.2: the Triton configuration a result of ``agent tune`` was measured with
    (``max_batch_size``, ``dynamic_batching`` with its preferred sizes and
    ``max_queue_delay_microseconds``, the instance count), the search that tried it and
    its p99 budget; ``chosen``: the configuration the search wrote back to the repository
    (its best point within budget); ``default``: the point is of the untuned configuration
    ``agent repo`` writes, measured in the same run for comparison."""

    instances: Positive
    max_batch_size: Count
    dynamic_batching: bool
    preferred_batch_sizes: Annotated[list[Positive], Field(max_length=32)] = []
    queue_delay_us: Count | None = None
    search: Literal["quick", "brute"]
    objective: Literal["throughput", "cost"] = "throughput"
    p99_budget_ms: Annotated[float, Field(gt=0)]
    within_budget: bool
    chosen: bool = False
    default: bool = False


class BenchResult(Checked):
    model: Name
    format: Format
    precision: Precision = "fp32"
    device: Literal["cpu", "cuda"] = "cpu"
    batch_size: Positive
    concurrency: Positive = 1
    triton_model: Name | None = None
    protocol: Literal["http", "grpc"] | None = None
    latency_ms: LatencyStats
    throughput_ips: NonNegative  # inferences (samples) per second
    requests: Count
    windows: Count
    stable: bool
    cv_pct: NonNegative | None = None  # 1.1: coefficient of variation of the used windows' throughput, %
    speedup_vs_eager: NonNegative | None = None
    speedup_ci_low: NonNegative | None = None  # 1.1: 95 % confidence interval of speedup_vs_eager
    speedup_ci_high: NonNegative | None = None  # (interleaved engine/eager windows, paired)
    speedup_pairs: Count | None = None  # 1.1: interleaved window pairs behind the interval
    peak_host_mem_mb: NonNegative | None = None
    peak_gpu_mem_mb: NonNegative | None = None
    server: ServerBreakdown | None = None
    client: ClientBreakdown | None = None  # 1.1: the client's send / receive phases (served results)
    scenario: ScenarioResult | None = None  # 1.1: set when this result is an MLPerf LoadGen scenario
    # 1.1: "image": each request carried encoded images (JPEG) and the measurement includes decoding and
    # preprocessing (in-process: agent.classify.imagenet; served: the <model>_classifier ensemble)
    input: Literal["tensor", "image"] = "tensor"
    server_metrics: ServerMetrics | None = None  # 1.1: Triton's Prometheus metrics (served results)
    telemetry: DeviceTelemetry | None = None  # 1.1: NVML / psutil during the windows
    tuning: TuningPoint | None = None  # 1.2: a point of `agent tune`'s search (never in the normal ranking)


V11_RESULT_FIELDS = ("cv_pct", "speedup_ci_low", "speedup_ci_high", "speedup_pairs", "scenario",
                     "server_metrics", "telemetry", "client")
V12_RESULT_FIELDS = ("tuning",)


class BenchSettings(Checked):
    warmup: Count
    window_seconds: Annotated[float, Field(gt=0)] | None = None
    iterations: Positive | None = None
    stability_pct: NonNegative
    max_windows: Positive
    url: Text | None = None
    omp_wait_policy: Short | None = None  # 1.1: OMP_WAIT_POLICY of the measuring process (agent/__init__.py)


class ResultDocument(Checked):
    """One `agent bench` run of one node, as pushed to the collector. Beyond this schema the
    collector checks: min <= p50 <= p90 <= p95 <= p99 <= max; no control character (NUL
    included) in any string; created_at at most 5 minutes ahead of its clock; NaN and
    Infinity are not numbers."""

    schema_version: Literal["1.0", "1.1", "1.2"] = RESULT_SCHEMA_VERSION
    id: DocumentId = Field(default_factory=lambda: str(uuid.uuid4()))
    created_at: datetime = Field(default_factory=utcnow)
    target: Target
    node: NodeFacts
    settings: BenchSettings
    results: list[BenchResult]

    @model_validator(mode="before")
    @classmethod
    def _no_control_characters(cls, data: Any, info: ValidationInfo) -> Any:
        if info.context and info.context.get(CONTROL_CHECKED):
            return data  # the collector scanned the raw JSON text (cheaper than this walk)
        if isinstance(data, dict) and has_control_character(data):
            raise ValueError(f"control character (e.g. NUL) in {_control_character(data) or 'the document'}")
        return data

    @model_validator(mode="after")
    def _fields_of_its_version(self) -> ResultDocument:
        if self.schema_version == "1.0":
            for i, r in enumerate(self.results):
                for f in V11_RESULT_FIELDS:
                    if getattr(r, f) is not None:
                        raise ValueError(f"results.{i}.{f} needs schema_version 1.1 (the document says 1.0)")
                if r.format == "pt2" or r.input != "tensor":
                    what = "format pt2" if r.format == "pt2" else f"input {r.input}"
                    raise ValueError(f"results.{i}.{what} needs schema_version 1.1 (the document says 1.0)")
            if self.settings.omp_wait_policy is not None:
                raise ValueError("settings.omp_wait_policy needs schema_version 1.1 (the document says 1.0)")
        if self.schema_version in ("1.0", "1.1"):
            for i, r in enumerate(self.results):
                for f in V12_RESULT_FIELDS:
                    if getattr(r, f) is not None:
                        raise ValueError(f"results.{i}.{f} needs schema_version 1.2 "
                                         f"(the document says {self.schema_version})")
                if r.server_metrics is not None and r.server_metrics.client_requests_max is not None:
                    raise ValueError(f"results.{i}.server_metrics.client_requests_max needs schema_version 1.2 "
                                     f"(the document says {self.schema_version})")
        return self

    @field_validator("created_at")
    @classmethod
    def _not_in_the_future(cls, t: datetime) -> datetime:
        aware = t if t.tzinfo is not None else t.replace(tzinfo=UTC)
        if aware > datetime.now(UTC) + MAX_CLOCK_SKEW:
            raise ValueError(f"created_at {t.isoformat()} is in the future (more than "
                             f"{int(MAX_CLOCK_SKEW.total_seconds() // 60)} min ahead of this clock)")
        return t
