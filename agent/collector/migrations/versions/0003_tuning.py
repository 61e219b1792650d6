"""result schema 1.2: the points of `agent tune`'s configuration search

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

A result of ``agent tune`` carries its serving configuration (``tuning``: the
TuningPoint as JSON text) and whether the search chose it (``tuning_chosen``).
Both are NULL for every other result, so 1.0 and 1.1 documents stay valid and the
fleet report's rankings keep to ``tuning IS NULL``.
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:  # batch: SQLite cannot ALTER most things
        batch.add_column(sa.Column("tuning", sa.Text))
        batch.add_column(sa.Column("tuning_chosen", sa.Boolean))


def downgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.drop_column("tuning_chosen")
        batch.drop_column("tuning")
