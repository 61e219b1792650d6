"""The fleet collector: an HTTP service that ingests result documents
idempotently (by document id) into SQLite or PostgreSQL and answers queries.

- ``tables``  — SQLAlchemy tables (nodes, runs, results)
- ``db``      — engines (SQLite WAL / PostgreSQL) and Alembic migrations
- ``ingest``  — one document -> rows, exactly once
- ``app``     — the FastAPI application factory (auth, limits, queries)
- ``push``    — the node side: spool result documents, push them exactly once
"""

# The optional read-only token's environment variable (the server reads it; `agent fleet
# report --collector` sends it). Here, not in a command module, so both can import it cheaply.
READ_TOKEN_ENV = "INFERFLEET_COLLECTOR_READ_TOKEN"
# The paths the node side (push) and the server (app) agree on.
RESULTS_PATH = "/v1/results"
HEALTH_PATH = "/healthz"
