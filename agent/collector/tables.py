"""The collector's tables. Times are stored as naive UTC datetimes so that
SQLite and PostgreSQL compare them the same way.

``results`` is denormalised (node, time) so that the fleet report can
aggregate it without joins on the hot path."""

from __future__ import annotations

from sqlalchemy import (
    Boolean, Column, DateTime, Float, ForeignKey, Index, Integer, MetaData, PrimaryKeyConstraint, String, Table,
    Text, text,
)

metadata = MetaData()

nodes = Table(
    "nodes",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("hostname", String(255), nullable=False),
    Column("cloud", String(64)),
    Column("region", String(64)),
    Column("instance_type", String(128)),
    Column("price_per_hour", Float),
    Column("gpu_name", String(128)),
    Column("gpu_count", Integer, nullable=False, default=0),
    Column("first_seen", DateTime, nullable=False),
    Column("last_seen", DateTime, nullable=False),
    Column("facts", Text, nullable=False),  # NodeFacts JSON of the newest run
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("node_name", String(255), ForeignKey("nodes.name"), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("received_at", DateTime, nullable=False),
    Column("target", String(16), nullable=False),
    Column("hostname", String(255), nullable=False),
    Column("instance_type", String(128)),
    Column("gpu_name", String(128)),
    Column("price_per_hour", Float),
    Column("driver_version", String(64)),
    Column("cuda_version", String(64)),
    Column("cudnn_version", String(64)),
    Column("tensorrt_version", String(64)),
    Column("triton_version", String(64)),
    Column("torch_version", String(64)),
    Column("onnxruntime_version", String(64)),
    Column("stack", String(512), nullable=False),  # "driver=535 cuda=12.2 ..." — the regression key
    Column("result_count", Integer, nullable=False),
    Column("document", Text, nullable=False),
    Index("ix_runs_node_created", "node_name", "created_at"),
    Index("ix_runs_created", "created_at"),
)

results = Table(
    "results",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("node_name", String(255), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("model", String(128), nullable=False),
    Column("format", String(16), nullable=False),
    Column("precision", String(8), nullable=False),
    Column("device", String(8), nullable=False),
    Column("batch_size", Integer, nullable=False),
    Column("concurrency", Integer, nullable=False),
    Column("throughput_ips", Float, nullable=False),
    Column("p50_ms", Float, nullable=False),
    Column("p90_ms", Float, nullable=False),
    Column("p95_ms", Float, nullable=False),
    Column("p99_ms", Float, nullable=False),
    Column("mean_ms", Float, nullable=False),
    Column("stable", Boolean, nullable=False),
    # schema 1.1 (migration 0002): NULL scenario = a concurrency sweep
    Column("scenario", String(16)),  # single-stream | multi-stream | offline | server
    Column("scenario_valid", Boolean),  # LoadGen's verdict; INVALID results are never ranked
    Column("scenario_metric", Float),  # the scenario's MLPerf metric (see ScenarioResult.metric)
    Column("cv_pct", Float),  # coefficient of variation of the used windows' throughput, %
    Column("queue_us", Float),  # served: per-request queue time in Triton
    Column("compute_us", Float),  # served: per-request compute (input + infer + output) in Triton
    Column("power_w", Float),  # mean GPU power during the windows (NVML, else Triton's nv_gpu_power_usage)
    Column("utilization_pct", Float),  # mean GPU utilisation (CPU node: the measuring process's CPU)
    Column("input", String(8)),  # "image": requests of encoded images through the preprocessing
    # schema 1.2 (migration 0003): a point of `agent tune`'s search (TuningPoint JSON); NULL = not tuning
    Column("tuning", Text),
    Column("tuning_chosen", Boolean),  # the configuration the search wrote back
    Index("ix_results_run", "run_id"),
    Index("ix_results_model_format", "model", "format"),
    Index("ix_results_created", "created_at"),
    # the fleet report's tuning section (agent.fleet.tuning) reads only tuning points (migration 0004)
    Index("ix_results_tuning", "run_id", sqlite_where=text("tuning IS NOT NULL"),
          postgresql_where=text("tuning IS NOT NULL")),
)

# The newest result of every configuration, folded in from the runs ingest queues in
# latest_pending (agent.collector.latest): what the fleet report ranks, summarises and draws,
# aggregated in SQL (medians by index seek, agent.fleet.summary), so that its cost grows
# with the number of configurations summarised, not with the number of stored results.
# "Newest" is by effective time — min(the result's created_at, its run's received_at):
# a document claiming the future never stays newest — ties by result id. A served
# result is its own backend ("triton-onnx"), encoded-image requests too ("onnx images").
LATEST_KEY = ("node_name", "model", "backend", "precision", "batch_size", "concurrency", "scenario")
SUMMARY_GROUP = ("scenario", "model", "gpu", "backend", "precision", "batch_size", "concurrency")
latest_results = Table(
    "latest_results",
    metadata,
    Column("node_name", String(255), nullable=False),
    Column("model", String(128), nullable=False),
    Column("backend", String(48), nullable=False),  # format, "triton-" when served, " images" for image requests
    Column("precision", String(8), nullable=False),
    Column("batch_size", Integer, nullable=False),
    Column("concurrency", Integer, nullable=False),  # 0 for an MLPerf scenario result
    Column("scenario", String(16), nullable=False),  # "" for a concurrency sweep
    Column("result_id", Integer, nullable=False),  # results.id of the newest
    Column("run_id", String(64), nullable=False),
    Column("effective_at", DateTime, nullable=False),
    Column("gpu", String(128), nullable=False),  # the run's GPU, "cpu" when none
    Column("price_per_hour", Float),
    Column("throughput_ips", Float, nullable=False),
    Column("p99_ms", Float, nullable=False),
    Column("stable", Boolean, nullable=False),  # the bench's verdict; the report applies --max-cv to cv_pct
    Column("cv_pct", Float),
    Column("cost_per_million", Float),  # USD per 10^6 inferences at this throughput (NULL: no price)
    Column("speedup_vs_eager", Float),  # over the newest eager result of the same node and configuration
    Column("scenario_valid", Boolean),
    Column("scenario_metric", Float),
    PrimaryKeyConstraint(*LATEST_KEY, name="pk_latest_results"),
    # SQLite only (migration 0004 creates them there): the summary's groups in order, each
    # metric sorted within its group — counts and medians are index seeks; the first covers
    # the group counts and the rankings. PostgreSQL computes medians by window function and
    # keeps only the primary key (no index writes for what it does not read).
    Index("ix_latest_ips", *SUMMARY_GROUP, "throughput_ips", "stable", "cv_pct", "p99_ms", "cost_per_million",
          "speedup_vs_eager"),
    Index("ix_latest_p99", *SUMMARY_GROUP, "p99_ms"),
    Index("ix_latest_speedup", *SUMMARY_GROUP, "speedup_vs_eager"),
    Index("ix_latest_cost", *SUMMARY_GROUP, "cost_per_million"),
    Index("ix_latest_scenario", *SUMMARY_GROUP, "scenario_valid", "scenario_metric",
          sqlite_where=text("scenario <> ''"), postgresql_where=text("scenario <> ''")),
)

# The runs stored but not yet folded into latest_results: ingest adds its run here, in its own
# transaction (one small row); agent.collector.latest.fold_pending folds them in batches — the
# collector when it is idle, the fleet report before it reads — and deletes them.
latest_pending = Table(
    "latest_pending",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("node_name", String(255), nullable=False),
)

STACK_FIELDS = (
    ("driver", "driver_version"),
    ("cuda", "cuda_version"),
    ("cudnn", "cudnn_version"),
    ("tensorrt", "tensorrt_version"),
    ("triton", "triton_version"),
    ("torch", "torch_version"),
    ("onnxruntime", "onnxruntime_version"),
)
