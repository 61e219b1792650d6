"""The collector's HTTP API (FastAPI; OpenAPI at ``/openapi.json``, docs at ``/docs``).

Writes need ``Authorization: Bearer <token>``; the token comes from the
environment of the server, is compared in constant time and never logged.
Bodies are read up to a configurable limit, then parsed and validated
against :class:`agent.schema.ResultDocument`; anything wrong is answered
with a 4xx and a one-line ``detail`` and changes nothing."""

from __future__ import annotations

import hmac
import json
from datetime import datetime
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import Engine, func, select

from agent import __version__
from agent.collector.ingest import ingest, to_utc_naive
from agent.collector.tables import nodes, results, runs
from agent.schema import RESULT_SCHEMA_VERSION, ResultDocument

DEFAULT_MAX_BODY = 4 * 1024 * 1024
RESULTS_PATH = "/v1/results"


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat() + "Z"


def validation_message(e: ValidationError) -> str:
    first = e.errors()[0]
    where = ".".join(str(x) for x in first["loc"]) or "document"
    if first["type"] == "extra_forbidden":
        return f"unknown field {where!r} (schema_version {RESULT_SCHEMA_VERSION} forbids unknown fields)"
    more = f" (and {e.error_count() - 1} more errors)" if e.error_count() > 1 else ""
    return f"invalid result document: {where}: {first['msg']}{more}"


def parse_document(body: bytes) -> ResultDocument:
    """Bytes -> ResultDocument, or HTTPException(4xx) with a clear message."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HTTPException(400, f"malformed JSON: {e}") from None
    if not isinstance(data, dict):
        raise HTTPException(422, "a result document must be a JSON object")
    version = data.get("schema_version")
    if version is None:
        raise HTTPException(422, f"missing schema_version (this collector accepts {RESULT_SCHEMA_VERSION})")
    if version != RESULT_SCHEMA_VERSION:
        raise HTTPException(
            422, f"unsupported schema_version {version!r}: this collector accepts {RESULT_SCHEMA_VERSION}")
    try:
        return ResultDocument.model_validate(data)
    except ValidationError as e:
        raise HTTPException(422, validation_message(e)) from None


def run_summary(row) -> dict:  # noqa: ANN001
    m = dict(row._mapping)
    out = {k: v for k, v in m.items() if k != "document"}
    for k in ("created_at", "received_at"):
        out[k] = _iso(out.get(k))
    return out


def create_app(engine: Engine, token: str, max_body_bytes: int = DEFAULT_MAX_BODY) -> FastAPI:
    if not token:
        raise ValueError("the collector needs a non-empty write token")
    expected = token.encode()
    app = FastAPI(
        title="inferfleet collector",
        version=__version__,
        description="Gathers `agent bench` result documents from every node, exactly once, "
        "and answers fleet queries.",
    )

    def require_token(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.strip().encode(), expected):
            raise HTTPException(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict:
        with engine.connect() as conn:
            conn.execute(select(1))
        return {"status": "ok", "version": __version__}

    @app.post(
        RESULTS_PATH,
        tags=["results"],
        status_code=201,
        dependencies=[Depends(require_token)],
        summary="Ingest one result document (idempotent by id)",
        responses={
            200: {"description": "already stored (duplicate id): nothing changed"},
            201: {"description": "stored"},
            400: {"description": "malformed JSON"},
            401: {"description": "missing or invalid bearer token"},
            413: {"description": "body larger than the configured limit"},
            422: {"description": "wrong schema_version, unknown or invalid fields"},
        },
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ResultDocument"}}}}},
    )
    async def post_result(request: Request) -> JSONResponse:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            raise HTTPException(413, f"body of {length} bytes exceeds the limit of {max_body_bytes} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                raise HTTPException(413, f"body exceeds the limit of {max_body_bytes} bytes")
        doc = parse_document(bytes(body))
        created = await run_in_threadpool(ingest, engine, doc)
        if created:
            return JSONResponse({"id": doc.id, "status": "created"}, status_code=201)
        return JSONResponse({"id": doc.id, "status": "duplicate"}, status_code=200)

    @app.get("/v1/nodes", tags=["queries"], summary="Nodes with their newest facts")
    def list_nodes() -> list[dict]:
        counts = (select(runs.c.node_name, func.count().label("runs"))
                  .group_by(runs.c.node_name).subquery())
        q = (select(nodes, func.coalesce(counts.c.runs, 0).label("runs"))
             .outerjoin(counts, counts.c.node_name == nodes.c.name).order_by(nodes.c.name))
        with engine.connect() as conn:
            out = []
            for row in conn.execute(q):
                m = dict(row._mapping)
                m["facts"] = json.loads(m["facts"])
                m["first_seen"], m["last_seen"] = _iso(m["first_seen"]), _iso(m["last_seen"])
                out.append(m)
            return out

    @app.get("/v1/runs", tags=["queries"], summary="Runs, newest first, filtered")
    def list_runs(
        node: Annotated[str | None, Query(description="node name")] = None,
        model: Annotated[str | None, Query(description="runs that measured this model")] = None,
        backend: Annotated[str | None, Query(description="eager, torchscript, onnx or tensorrt")] = None,
        since: Annotated[datetime | None, Query(description="created at or after (ISO 8601)")] = None,
        until: Annotated[datetime | None, Query(description="created before (ISO 8601)")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
        full: Annotated[bool, Query(description="include each run's whole document")] = False,
    ) -> list[dict]:
        q = select(runs) if full else select(*[c for c in runs.c if c.name != "document"])
        if node:
            q = q.where(runs.c.node_name == node)
        if since:
            q = q.where(runs.c.created_at >= to_utc_naive(since))
        if until:
            q = q.where(runs.c.created_at < to_utc_naive(until))
        if model or backend:
            sub = select(results.c.run_id)
            if model:
                sub = sub.where(results.c.model == model)
            if backend:
                sub = sub.where(results.c.format == backend)
            q = q.where(runs.c.id.in_(sub))
        q = q.order_by(runs.c.created_at.desc(), runs.c.id).limit(limit).offset(offset)
        with engine.connect() as conn:
            out = []
            for row in conn.execute(q):
                s = run_summary(row)
                if full:
                    s["document"] = json.loads(row._mapping["document"])
                out.append(s)
            return out

    @app.get("/v1/runs/{run_id}", tags=["queries"], summary="One run's whole result document")
    def get_run(run_id: str) -> dict:
        with engine.connect() as conn:
            row = conn.execute(select(runs.c.document).where(runs.c.id == run_id)).first()
        if row is None:
            raise HTTPException(404, f"no run with id {run_id!r}")
        return json.loads(row[0])

    def custom_openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes)
        doc_schema = ResultDocument.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(doc_schema.pop("$defs", {}))
        components["ResultDocument"] = doc_schema
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"}}
        schema["paths"][RESULTS_PATH]["post"]["security"] = [{"bearer": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = custom_openapi
    return app
