"""The fleet collector: an HTTP service that ingests result documents
idempotently (by document id) into SQLite or PostgreSQL and answers queries.

- ``tables``  — SQLAlchemy tables (nodes, runs, results)
- ``db``      — engines (SQLite WAL / PostgreSQL) and Alembic migrations
- ``ingest``  — one document -> rows, exactly once
- ``app``     — the FastAPI application factory (auth, limits, queries)
"""
