"""result schema 1.1: MLPerf scenario verdicts, window stability and telemetry per result

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

Documents of schema 1.0 stay valid: the new columns are nullable and a 1.0
result has no scenario (a concurrency sweep) and no recorded variation.
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:  # batch: SQLite cannot ALTER most things
        batch.add_column(sa.Column("scenario", sa.String(16)))
        batch.add_column(sa.Column("scenario_valid", sa.Boolean))
        batch.add_column(sa.Column("scenario_metric", sa.Float))
        batch.add_column(sa.Column("cv_pct", sa.Float))
        batch.add_column(sa.Column("queue_us", sa.Float))
        batch.add_column(sa.Column("compute_us", sa.Float))
        batch.add_column(sa.Column("power_w", sa.Float))
        batch.add_column(sa.Column("utilization_pct", sa.Float))
        batch.add_column(sa.Column("input", sa.String(8)))  # NULL or "tensor": tensors; "image": encoded images


def downgrade() -> None:
    with op.batch_alter_table("results") as batch:
        for name in ("input", "utilization_pct", "power_w", "compute_us", "queue_us", "cv_pct", "scenario_metric",
                     "scenario_valid", "scenario"):
            batch.drop_column(name)
