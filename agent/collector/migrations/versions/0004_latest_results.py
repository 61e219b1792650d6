"""the newest result of every configuration (latest_results) and the runs not yet folded into it

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

The fleet report reads ``latest_results`` instead of scanning every stored
result; ingest queues each run in ``latest_pending`` and the collector (when idle)
and the report fold them in (``agent.collector.latest``). This revision creates both,
fills latest_results from the results already stored (the newest per configuration by a
window function, then every sweep row's speedup over eager), drops
``ix_results_config``, which no query uses any more, and adds ``ix_results_tuning``
(the tuning points only: the fleet report's tuning section reads nothing else). The SQL is this
revision's own copy of ``agent.collector.latest``'s at the time: a migration
must not change when the application's code does.
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

KEY = ("node_name", "model", "backend", "precision", "batch_size", "concurrency", "scenario")
GROUP = ("scenario", "model", "gpu", "backend", "precision", "batch_size", "concurrency")
COLUMNS = (*KEY, "result_id", "run_id", "effective_at", "gpu", "price_per_hour", "throughput_ips",
           "p99_ms", "stable", "cv_pct", "cost_per_million", "scenario_valid", "scenario_metric")

BACKFILL = f"""
INSERT INTO latest_results ({", ".join(COLUMNS)})
SELECT {", ".join(COLUMNS)} FROM (
  SELECT r.*, ROW_NUMBER() OVER (PARTITION BY {", ".join(KEY)}
                                 ORDER BY effective_at DESC, result_id DESC) AS rn
  FROM (
    SELECT res.node_name, res.model,
           CASE WHEN ru.target = 'triton' THEN 'triton-' || res.format ELSE res.format END
             || CASE WHEN res.input = 'image' THEN ' images' ELSE '' END AS backend,
           res.precision, res.batch_size,
           CASE WHEN res.scenario IS NULL THEN res.concurrency ELSE 0 END AS concurrency,
           COALESCE(res.scenario, '') AS scenario,
           res.id AS result_id, res.run_id,
           CASE WHEN res.created_at > ru.received_at THEN ru.received_at ELSE res.created_at END AS effective_at,
           COALESCE(ru.gpu_name, 'cpu') AS gpu, ru.price_per_hour, res.throughput_ips, res.p99_ms, res.stable,
           res.cv_pct,
           CASE WHEN ru.price_per_hour IS NULL OR res.throughput_ips <= 0 THEN NULL
                ELSE ru.price_per_hour / (res.throughput_ips * 3600.0) * 1e6 END AS cost_per_million,
           res.scenario_valid, res.scenario_metric
    FROM results res JOIN runs ru ON ru.id = res.run_id
    WHERE res.tuning IS NULL) r
) newest
WHERE rn = 1"""


def _eager_ips(precision: str) -> str:
    return f"""(SELECT e.throughput_ips FROM latest_results e
   WHERE e.node_name = latest_results.node_name AND e.model = latest_results.model
     AND e.backend = CASE WHEN latest_results.backend LIKE '% images' THEN 'eager images' ELSE 'eager' END
     AND e.precision = {precision} AND e.batch_size = latest_results.batch_size
     AND e.concurrency = latest_results.concurrency AND e.scenario = '')"""


SPEEDUP = f"""
UPDATE latest_results SET speedup_vs_eager = throughput_ips / COALESCE(
  NULLIF({_eager_ips("latest_results.precision")}, 0), NULLIF({_eager_ips("'fp32'")}, 0))
WHERE scenario = ''"""


def upgrade() -> None:
    op.create_table(
        "latest_results",
        sa.Column("node_name", sa.String(255), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("backend", sa.String(48), nullable=False),
        sa.Column("precision", sa.String(8), nullable=False),
        sa.Column("batch_size", sa.Integer, nullable=False),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column("scenario", sa.String(16), nullable=False),
        sa.Column("result_id", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("effective_at", sa.DateTime, nullable=False),
        sa.Column("gpu", sa.String(128), nullable=False),
        sa.Column("price_per_hour", sa.Float),
        sa.Column("throughput_ips", sa.Float, nullable=False),
        sa.Column("p99_ms", sa.Float, nullable=False),
        sa.Column("stable", sa.Boolean, nullable=False),
        sa.Column("cv_pct", sa.Float),
        sa.Column("cost_per_million", sa.Float),
        sa.Column("speedup_vs_eager", sa.Float),
        sa.Column("scenario_valid", sa.Boolean),
        sa.Column("scenario_metric", sa.Float),
        sa.PrimaryKeyConstraint(*KEY, name="pk_latest_results"),
    )
    op.execute(BACKFILL)  # before the indexes: one sort each instead of a row-by-row build
    op.execute(SPEEDUP)
    op.create_table(  # runs stored but not yet folded into latest_results (none after the backfill)
        "latest_pending",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("node_name", sa.String(255), nullable=False),
    )
    if op.get_bind().dialect.name == "sqlite":
        # the summary's groups with each metric in order: SQLite reads medians by index seek;
        # PostgreSQL computes them by window function and needs none (nor their writes)
        op.create_index("ix_latest_ips", "latest_results",
                        [*GROUP, "throughput_ips", "stable", "cv_pct", "p99_ms", "cost_per_million", "speedup_vs_eager"])
        op.create_index("ix_latest_p99", "latest_results", [*GROUP, "p99_ms"])
        op.create_index("ix_latest_speedup", "latest_results", [*GROUP, "speedup_vs_eager"])
        op.create_index("ix_latest_cost", "latest_results", [*GROUP, "cost_per_million"])
        op.create_index("ix_latest_scenario", "latest_results", [*GROUP, "scenario_valid", "scenario_metric"],
                        sqlite_where=sa.text("scenario <> ''"))
    op.drop_index("ix_results_config", table_name="results")
    op.create_index("ix_results_tuning", "results", ["run_id"], sqlite_where=sa.text("tuning IS NOT NULL"),
                    postgresql_where=sa.text("tuning IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_results_tuning", table_name="results")
    op.create_index("ix_results_config", "results",
                    ["node_name", "model", "format", "precision", "batch_size", "concurrency", "created_at"])
    op.drop_table("latest_pending")
    op.drop_table("latest_results")  # its indexes with it
