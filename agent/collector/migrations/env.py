"""Alembic environment: the engine comes from ``agent.collector.db.migrate``
(``config.attributes["engine"]``) or, for the alembic CLI, from
``sqlalchemy.url`` in alembic.ini / ``$INFERFLEET_COLLECTOR_DB``."""

from __future__ import annotations

import os

from alembic import context

from agent.collector.tables import metadata

config = context.config
engine = config.attributes.get("engine")
if engine is None:
    from agent.collector.db import make_engine

    engine = make_engine(os.environ.get("INFERFLEET_COLLECTOR_DB") or config.get_main_option("sqlalchemy.url"))

with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
