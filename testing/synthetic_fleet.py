"""Realistic, deterministic result documents for tests and the fleet benchmark.

Numbers follow the shape of real measurements: each GPU has a speed factor,
each backend a speedup over eager, throughput grows sub-linearly with the
batch size and latency grows with concurrency; a little seeded noise keeps
nodes of the same GPU apart. Prices are on-demand list prices ($/hour).

Schema 1.1 extras, when asked for (``fleet`` asks): every result's window
variation (``cv_pct``, an occasional noisy one above the report's limit), the
speedup's 95 % interval, and MLPerf LoadGen scenario results (offline, server,
single-stream, multi-stream) for the first models, a few of them INVALID with
LoadGen's reasons."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from agent.schema import (
    BenchResult,
    BenchSettings,
    LatencyStats,
    NodeFacts,
    ResultDocument,
    ScenarioResult,
)


@dataclass(frozen=True)
class Gpu:
    name: str
    cloud: str
    region: str
    instance_type: str
    price_per_hour: float
    speed: float  # relative to an RTX 3080


GPUS = (
    Gpu("NVIDIA GeForce RTX 3080", "genesiscloud", "ARC-IS-HAF-1", "vcpu-4_memory-16g_nvidia-rtx-3080-1", 0.50, 1.0),
    Gpu("Tesla T4", "aws", "eu-west-1", "g4dn.xlarge", 0.526, 0.45),
    Gpu("NVIDIA A10G", "aws", "us-east-1", "g5.xlarge", 1.006, 1.15),
    Gpu("Tesla V100-SXM2-16GB", "azure", "westeurope", "Standard_NC6s_v3", 3.06, 1.4),
    Gpu("NVIDIA A100-SXM4-40GB", "gcp", "us-central1", "a2-highgpu-1g", 3.67, 2.6),
    Gpu("Quadro P4000", "paperspace", "NY2", "P4000", 0.51, 0.35),
)

# eager images/s at batch 1 on an RTX 3080 (order of magnitude of real numbers)
MODELS = {
    "resnet18": 900, "resnet34": 520, "resnet50": 330, "resnet101": 190, "resnet152": 130,
    "mobilenet_v2": 1100, "mobilenet_v3_small": 1500, "mobilenet_v3_large": 1200,
    "squeezenet1_0": 1300, "squeezenet1_1": 1600, "shufflenet_v2_x0_5": 1400,
    "shufflenet_v2_x1_0": 1250, "densenet121": 210, "densenet161": 120, "densenet169": 160,
    "densenet201": 130, "vgg11": 380, "vgg13": 300, "vgg16": 250, "vgg19": 210,
    "alexnet": 2200, "googlenet": 640, "inception_v3": 280, "mnasnet0_5": 1350,
    "mnasnet1_0": 1150, "efficientnet_b0": 700, "efficientnet_b1": 520, "regnet_x_400mf": 900,
    "regnet_y_400mf": 850, "wide_resnet50_2": 170, "resnext50_32x4d": 260,
}
BACKEND_SPEEDUP = {"eager": 1.0, "torchscript": 1.12, "onnx": 1.55, "tensorrt": 2.9}

STACK = {"driver_version": "535.183.01", "cuda_version": "12.2", "cudnn_version": "8902",
         "tensorrt_version": "8.6.1", "triton_version": "2.40.0", "torch_version": "2.1.2",
         "onnxruntime_version": "1.16.3"}


def make_node(index: int, gpu: Gpu | None = None, **overrides) -> NodeFacts:
    gpu = gpu or GPUS[index % len(GPUS)]
    facts = dict(
        node_name=f"node-{index:04d}", hostname=f"gpu-{index:04d}.{gpu.cloud}.internal",
        cloud=gpu.cloud, region=gpu.region, instance_type=gpu.instance_type,
        price_per_hour=gpu.price_per_hour, os="Ubuntu 22.04.4 LTS", cpu="Intel Xeon",
        cpu_count=8, memory_gb=32.0, gpu_name=gpu.name, gpu_count=1,
        gpu_compute_capability="8.6", python_version="3.10.12", agent_version="0.1.0",
        torchvision_version="0.16.2", **STACK,
    )
    facts.update(overrides)
    return NodeFacts(**facts)


def gpu_of(node: NodeFacts) -> Gpu:
    return next((g for g in GPUS if g.name == node.gpu_name), GPUS[0])


def make_result(model: str, fmt: str, batch: int, concurrency: int, speed: float,
                rng: random.Random) -> BenchResult:
    base = MODELS.get(model, 500) * speed * BACKEND_SPEEDUP[fmt]
    tput = base * batch / (1 + 0.3 * (batch - 1)) ** 0.85 * rng.uniform(0.97, 1.03)
    tput *= min(concurrency, 2) ** 0.15  # a second stream hides a little host overhead
    p50 = 1000.0 * batch * concurrency / tput
    lat = LatencyStats(p50=p50, p90=p50 * 1.08, p95=p50 * 1.12, p99=p50 * rng.uniform(1.18, 1.3),
                       mean=p50 * 1.02, min=p50 * 0.9, max=p50 * 1.5, std=p50 * 0.05)
    return BenchResult(model=model, format=fmt, device="cuda", batch_size=batch,
                       concurrency=concurrency, latency_ms=lat, throughput_ips=tput,
                       requests=int(tput * 3 / batch) + 1, windows=3, stable=True,
                       triton_model=None if fmt == "eager" else f"{model}_{fmt}")


SCENARIO_METRIC = {"offline": "samples_per_second", "server": "scheduled_qps",
                   "single-stream": "p90_latency_ms", "multi-stream": "p99_latency_ms"}
SERVER_BOUND_MS = 15.0


def make_scenario_result(model: str, fmt: str, scenario: str, speed: float, rng: random.Random,
                         valid: bool = True) -> BenchResult:
    """One LoadGen scenario at batch 1: offline runs flat out, the server scenario at
    the highest QPS whose p99 stays within SERVER_BOUND_MS, single-stream one query at
    a time (p90), multi-stream 8 samples per query (p99 per query)."""
    r = make_result(model, fmt, 1, 1, speed, rng)
    lat = r.latency_ms
    spq = 8 if scenario == "multi-stream" else 1
    value = {"offline": r.throughput_ips * 1.1, "server": r.throughput_ips * 0.8,
             "single-stream": lat.p90, "multi-stream": lat.p99 * 5.5}[scenario]
    reasons = []
    if not valid:  # as LoadGen's summary words them
        reasons = {
            "server": [(f"99.00 percentile latency {SERVER_BOUND_MS * 1.4:.2f} ms > target latency "
                        f"{SERVER_BOUND_MS:.0f} ms"), "Reduce target QPS to improve latency."],
            "offline": ["Min duration satisfied : NO",
                        ("Increase expected QPS so the loadgen pre-generates a larger (coalesced) query.")],
        }.get(scenario, ["Min queries satisfied : NO"])
    r.scenario = ScenarioResult(
        name=scenario, valid=valid, invalid_reasons=reasons, metric=SCENARIO_METRIC[scenario],
        metric_value=value, samples_per_query=spq,
        target_qps=value if scenario in ("offline", "server") else None,
        target_latency_ms=SERVER_BOUND_MS if scenario == "server" else None,
        latency_percentile=99.0 if scenario in ("server", "multi-stream") else 90.0,
        min_duration_ms=600_000, min_query_count=100 if scenario != "offline" else 1,
        queries=max(100, int(r.throughput_ips * 600 / spq)), samples=max(100, int(r.throughput_ips * 600)),
        qps_tried=[value * 1.2, value] if scenario == "server" else [], loadgen_version="4.1")
    return r


def make_document(node: NodeFacts, models=("resnet18",), formats=tuple(BACKEND_SPEEDUP),  # noqa: ANN001
                  batch_sizes=(1, 8), concurrencies=(1,), created_at: datetime | None = None,
                  seed: int = 0, speed: float | None = None, doc_id: str | None = None,
                  target: str = "inprocess", scenarios=(), scenario_models=None,  # noqa: ANN001
                  invalid=(), stability: bool = False) -> ResultDocument:
    """``scenarios``: LoadGen scenarios measured for ``scenario_models`` (default: the first
    model) on every format; ``invalid``: the (model, format, scenario) among them that
    LoadGen called INVALID. ``stability``: set cv_pct on every result and the speedup's
    95 % interval on every non-eager one (schema 1.1)."""
    rng = random.Random(f"{node.node_name}-{seed}")
    speed = gpu_of(node).speed * rng.uniform(0.95, 1.05) if speed is None else speed
    results = [make_result(m, f, b, c, speed, rng)
               for m in models for f in formats for b in batch_sizes for c in concurrencies]
    for r in results:
        eager = next((e for e in results if e.format == "eager" and e.model == r.model
                      and e.batch_size == r.batch_size and e.concurrency == r.concurrency), None)
        r.speedup_vs_eager = r.throughput_ips / eager.throughput_ips if eager else None
    if stability:  # a separate stream: the sweep's numbers stay those of a 1.0 document
        extra_rng = random.Random(f"{node.node_name}-{seed}-1.1")
        for r in results:
            r.cv_pct = extra_rng.uniform(6.0, 9.0) if extra_rng.random() < 0.01 else extra_rng.uniform(0.2, 3.0)
            if r.speedup_vs_eager is not None and r.format != "eager":
                half = r.speedup_vs_eager * extra_rng.uniform(0.01, 0.04)
                r.speedup_ci_low, r.speedup_ci_high = r.speedup_vs_eager - half, r.speedup_vs_eager + half
                r.speedup_pairs = 5
    invalid = set(invalid)
    results += [make_scenario_result(m, f, s, speed, rng, valid=(m, f, s) not in invalid)
                for m in (models[:1] if scenario_models is None else scenario_models)
                for f in formats for s in scenarios]
    extra = {"id": doc_id} if doc_id else {}
    return ResultDocument(
        created_at=created_at or datetime.now(UTC), target=target, node=node,
        settings=BenchSettings(warmup=5, window_seconds=1.0, stability_pct=10.0, max_windows=8),
        results=results, **extra,
    )


FLEET_SCENARIO_MODELS = 3


def fleet(n_nodes: int, models=tuple(MODELS), formats=tuple(BACKEND_SPEEDUP),  # noqa: ANN001
          batch_sizes=(1, 8, 32), concurrencies=(1,), start: datetime | None = None,
          scenarios=tuple(SCENARIO_METRIC)):  # noqa: ANN001
    """One document per node (a generator: a fleet does not need to fit in memory), with
    the LoadGen ``scenarios`` for the first FLEET_SCENARIO_MODELS models on every format:
    every 10th node has one INVALID server run, every 25th one INVALID offline run."""
    start = start or datetime(2025, 1, 1, tzinfo=UTC)
    sm = models[:FLEET_SCENARIO_MODELS]
    for i in range(n_nodes):
        invalid = []
        if sm and i % 10 == 3:
            invalid.append((sm[0], formats[-1], "server"))
        if sm and i % 25 == 7:
            invalid.append((sm[-1], formats[0], "offline"))
        yield make_document(make_node(i), models, formats, batch_sizes, concurrencies,
                            created_at=start + timedelta(minutes=i), seed=i, scenarios=scenarios,
                            scenario_models=sm, invalid=invalid, stability=True)
