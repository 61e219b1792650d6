"""Where the report reads from: a collector database (``--db``), or a running
collector (``--collector``) mirrored page by page into an in-memory SQLite
database with the same schema, so both paths share every query."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import StaticPool

from agent.errors import AgentError

PAGE = 200


def open_database(url: str) -> Engine:
    from agent.collector.db import make_engine, normalize_url, require_schema

    if normalize_url(url).startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():
            raise AgentError(f"no collector database at {path}")
    engine = make_engine(url)
    require_schema(engine)
    return engine


def _received_at(value: str | None) -> datetime | None:
    """``/v1/runs``' received_at (ISO 8601, "Z" for UTC) as an aware datetime; None when absent."""
    if not value:
        return None
    t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def read_token(token_env: str | None) -> str:
    """The token for the collector's read API, from the environment (never an argument)."""
    import os

    from agent.collector import READ_TOKEN_ENV
    from agent.config import load_config

    names = [token_env] if token_env else [READ_TOKEN_ENV, load_config().collector_token_env]
    for name in names:
        if os.environ.get(name, "").strip():
            return os.environ[name].strip()
    raise AgentError(f"no collector token for reading: set {' or '.join(names)}")


def mirror_collector(base_url: str, token: str, since: datetime | None = None,
                     timeout: float = 30.0) -> Engine:
    import httpx
    from pydantic import ValidationError

    from agent.collector.ingest import ingest_many
    from agent.collector.push import collector_base
    from agent.collector.tables import metadata
    from agent.schema import ResultDocument
    from agent.ui import progress

    base = collector_base(base_url)
    engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    metadata.create_all(engine)
    params: dict = {"full": "true", "limit": PAGE}
    if since is not None:
        params["since"] = since.isoformat()
    offset = 0
    with httpx.Client(timeout=timeout, headers={"Authorization": f"Bearer {token}"}) as client, \
            progress() as bar:
        task = bar.add_task(f"fetching runs from {base}", total=None)
        while True:
            try:
                resp = client.get(base + "/v1/runs", params={**params, "offset": offset})
            except httpx.HTTPError as e:
                raise AgentError(f"collector {base} unreachable: {e.__class__.__name__}: {e}") from None
            if resp.status_code == 401:
                raise AgentError(f"collector {base} refused the read token (401)")
            if resp.status_code != 200:
                raise AgentError(f"collector {base} answered {resp.status_code} to /v1/runs")
            page = resp.json()
            try:
                docs = [ResultDocument.model_validate(r["document"]) for r in page]
                # the collector's arrival time, not the copy's: the report's "newest"
                # never trusts a document's created_at beyond it (data.EFFECTIVE_AT)
                received = [_received_at(r.get("received_at")) for r in page]
            except (ValidationError, KeyError, ValueError, TypeError) as e:
                raise AgentError(f"collector {base} sent a document this agent cannot read: {e}") from None
            ingest_many(engine, docs, received)
            offset += len(page)
            bar.update(task, completed=offset)
            if len(page) < PAGE:
                break
    return engine
