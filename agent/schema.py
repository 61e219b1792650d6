"""The versioned documents the agent writes and the collector ingests.

One place for each: the engine manifest (``manifest.json`` in a build
directory) and the benchmark result document (``agent bench --json``, pushed
to the collector). Both forbid unknown fields so that a typo or a document
from another version is refused, not half-read. Bump ``*_SCHEMA_VERSION`` on
any incompatible change."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_SCHEMA_VERSION = "1.0"
RESULT_SCHEMA_VERSION = "1.0"

Format = Literal["eager", "torchscript", "onnx", "tensorrt"]
EngineFormat = Literal["torchscript", "onnx", "tensorrt"]
Precision = Literal["fp32", "fp16"]
Target = Literal["inprocess", "triton"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


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
    schema_version: Literal["1.0"] = MANIFEST_SCHEMA_VERSION
    engines: dict[str, EngineRecord] = {}  # key: EngineRecord.name
    updated_at: datetime = Field(default_factory=utcnow)


# ---------------------------------------------------------------------- results
class NodeFacts(Strict):
    """Who measured: identity from the agent config, facts probed on the node."""

    node_name: str
    hostname: str
    cloud: str | None = None
    region: str | None = None
    instance_type: str | None = None
    price_per_hour: float | None = None  # USD, from the agent config
    labels: dict[str, str] = {}
    os: str | None = None
    cpu: str | None = None
    cpu_count: int | None = None
    memory_gb: float | None = None
    gpu_name: str | None = None
    gpu_count: int = 0
    gpu_compute_capability: str | None = None
    driver_version: str | None = None
    cuda_version: str | None = None
    cudnn_version: str | None = None
    tensorrt_version: str | None = None
    triton_version: str | None = None
    torch_version: str | None = None
    torchvision_version: str | None = None
    onnxruntime_version: str | None = None
    python_version: str | None = None
    agent_version: str | None = None


class LatencyStats(Strict):
    """Milliseconds per request (one request = one batch)."""

    p50: float
    p90: float
    p95: float
    p99: float
    mean: float
    min: float
    max: float
    std: float


class ServerBreakdown(Strict):
    """Per-request averages from Triton's statistics API (microseconds)."""

    queue_us: float
    compute_input_us: float
    compute_infer_us: float
    compute_output_us: float
    request_count: int


class BenchResult(Strict):
    model: str
    format: Format
    precision: Precision = "fp32"
    device: Literal["cpu", "cuda"] = "cpu"
    batch_size: int
    concurrency: int = 1
    triton_model: str | None = None
    protocol: Literal["http", "grpc"] | None = None
    latency_ms: LatencyStats
    throughput_ips: float  # inferences (samples) per second
    requests: int
    windows: int
    stable: bool
    speedup_vs_eager: float | None = None
    peak_host_mem_mb: float | None = None
    peak_gpu_mem_mb: float | None = None
    server: ServerBreakdown | None = None


class BenchSettings(Strict):
    warmup: int
    window_seconds: float | None = None
    iterations: int | None = None
    stability_pct: float
    max_windows: int
    url: str | None = None


class ResultDocument(Strict):
    schema_version: Literal["1.0"] = RESULT_SCHEMA_VERSION
    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    created_at: datetime = Field(default_factory=utcnow)
    target: Target
    node: NodeFacts
    settings: BenchSettings
    results: list[BenchResult]
