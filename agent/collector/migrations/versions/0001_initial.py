"""initial schema: nodes, runs, results

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("cloud", sa.String(64)),
        sa.Column("region", sa.String(64)),
        sa.Column("instance_type", sa.String(128)),
        sa.Column("price_per_hour", sa.Float),
        sa.Column("gpu_name", sa.String(128)),
        sa.Column("gpu_count", sa.Integer, nullable=False),
        sa.Column("first_seen", sa.DateTime, nullable=False),
        sa.Column("last_seen", sa.DateTime, nullable=False),
        sa.Column("facts", sa.Text, nullable=False),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("node_name", sa.String(255), sa.ForeignKey("nodes.name"), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("received_at", sa.DateTime, nullable=False),
        sa.Column("target", sa.String(16), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("instance_type", sa.String(128)),
        sa.Column("gpu_name", sa.String(128)),
        sa.Column("price_per_hour", sa.Float),
        sa.Column("driver_version", sa.String(64)),
        sa.Column("cuda_version", sa.String(64)),
        sa.Column("cudnn_version", sa.String(64)),
        sa.Column("tensorrt_version", sa.String(64)),
        sa.Column("triton_version", sa.String(64)),
        sa.Column("torch_version", sa.String(64)),
        sa.Column("onnxruntime_version", sa.String(64)),
        sa.Column("stack", sa.String(512), nullable=False),
        sa.Column("result_count", sa.Integer, nullable=False),
        sa.Column("document", sa.Text, nullable=False),
    )
    op.create_index("ix_runs_node_created", "runs", ["node_name", "created_at"])
    op.create_index("ix_runs_created", "runs", ["created_at"])
    op.create_table(
        "results",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("node_name", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("precision", sa.String(8), nullable=False),
        sa.Column("device", sa.String(8), nullable=False),
        sa.Column("batch_size", sa.Integer, nullable=False),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column("throughput_ips", sa.Float, nullable=False),
        sa.Column("p50_ms", sa.Float, nullable=False),
        sa.Column("p90_ms", sa.Float, nullable=False),
        sa.Column("p95_ms", sa.Float, nullable=False),
        sa.Column("p99_ms", sa.Float, nullable=False),
        sa.Column("mean_ms", sa.Float, nullable=False),
        sa.Column("stable", sa.Boolean, nullable=False),
    )
    op.create_index("ix_results_run", "results", ["run_id"])
    op.create_index("ix_results_model_format", "results", ["model", "format"])
    op.create_index("ix_results_created", "results", ["created_at"])
    op.create_index(
        "ix_results_config", "results",
        ["node_name", "model", "format", "precision", "batch_size", "concurrency", "created_at"],
    )


def downgrade() -> None:
    op.drop_table("results")
    op.drop_table("runs")
    op.drop_table("nodes")
