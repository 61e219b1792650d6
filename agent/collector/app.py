"""The collector's HTTP API (FastAPI; OpenAPI at ``/openapi.json``, docs at ``/docs``).

Every ``/v1`` route needs ``Authorization: Bearer <token>``: writes the write
token, reads the write token or a separate read-only token. Tokens come
from the environment of the server, are compared in constant time and never
logged; ``/healthz``, ``/metrics`` (Prometheus, :mod:`agent.collector.metrics`:
counters only, no data), ``/docs`` and ``/openapi.json`` stay open.

A body must be ``application/json`` (else 415), is read up to a configurable
limit (413), its nesting depth is bounded before it is parsed (400), and it
is validated against :class:`agent.schema.ResultDocument`, values included
(422). A bad body is always answered with a 4xx and a one-line ``detail``
and changes nothing: never a 500, so that a pusher can tell a document that
will never be accepted from an outage."""

from __future__ import annotations

import hmac
import json
import re
from datetime import datetime
from typing import Annotated

import orjson
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from agent import __version__
from agent.collector import HEALTH_PATH, RESULTS_PATH
from agent.collector.ingest import ingest, to_utc_naive
from agent.collector.tables import nodes, results, runs
from agent.schema import (
    CONTROL_CHECKED,
    RESULT_SCHEMA_VERSIONS,
    ResultDocument,
    json_text_has_control_character,
)

DEFAULT_MAX_BODY = 4 * 1024 * 1024
MAX_JSON_DEPTH = 32  # a result document nests 4 deep; json.loads recurses and would crash near 1,000
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'"[]{}')  # bytes.translate deletes these
_QUOTED = re.compile(rb'"[^"]*"')
_EMPTY_PAIR = re.compile(rb"\[\]|\{\}")


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat() + "Z"


def validation_message(e: ValidationError) -> str:
    first = e.errors()[0]
    where = ".".join(str(x) for x in first["loc"]) or "document"
    if first["type"] == "extra_forbidden":
        return (f"unknown field {where!r} (result schema versions {', '.join(RESULT_SCHEMA_VERSIONS)} "
                "forbid unknown fields)")
    more = f" (and {e.error_count() - 1} more errors)" if e.error_count() > 1 else ""
    return f"invalid result document: {where}: {first['msg']}{more}"


def _structure(body: bytes) -> bytes:
    """The brackets of ``body`` outside its strings (escaped backslashes and quotes dropped
    first). When every string is free of brackets each one is an adjacent ``""`` pair after
    the translate: dropping the pairs leaves no quote, and no per-string work is needed."""
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    kept = body.translate(None, _NOT_STRUCTURE)
    bare = kept.replace(b'""', b"")
    return bare if b'"' not in bare else _QUOTED.sub(b"", kept)


def json_depth(body: bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """Deepest nesting of arrays/objects in ``body``, without parsing it (strings skipped).

    At C speed: keep the structure (:func:`_structure`), then drop the innermost empty
    ``[]``/``{}`` pairs once per level. Deeper than ``limit`` or unbalanced (the parser
    will say why): counted bracket by bracket, for the exact figure."""
    structure = _structure(body)
    kept, depth = structure, 0
    while kept and depth <= limit:
        inner = _EMPTY_PAIR.sub(b"", kept)
        if len(inner) == len(kept):
            break
        kept, depth = inner, depth + 1
    if not kept:
        return depth
    depth = deepest = 0
    for b in structure:
        if b in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not a number this collector stores (values must be finite)")


def is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _loads(body: bytes):  # noqa: ANN202
    """orjson (about 3x faster) when it accepts the text; whatever it refuses (NaN, lone
    surrogates, UTF-16, integers beyond 64 bits) goes to the standard library, whose
    answer (a value or the error) stands: the accepted documents and the messages are
    the standard library's."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body, parse_constant=_no_constants)


def parse_document(body: bytes) -> ResultDocument:
    """Bytes -> ResultDocument, or HTTPException(4xx) with a clear message."""
    depth = json_depth(body)
    if depth > MAX_JSON_DEPTH:
        raise HTTPException(400, f"JSON nested {depth} deep: the limit is {MAX_JSON_DEPTH}")
    try:
        data = _loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HTTPException(400, f"malformed JSON: {e}") from None
    except (ValueError, RecursionError) as e:  # NaN/Infinity, integers of more than 4,300 digits
        raise HTTPException(422, f"invalid JSON value: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise HTTPException(422, "a result document must be a JSON object")
    version = data.get("schema_version")
    accepted = ", ".join(RESULT_SCHEMA_VERSIONS)
    if version is None:
        raise HTTPException(422, f"missing schema_version (this collector accepts {accepted})")
    if version not in RESULT_SCHEMA_VERSIONS:
        raise HTTPException(422, f"unsupported schema_version {version!r}: this collector accepts {accepted}")
    # the raw text is scanned for control characters once (the model would walk the parsed tree)
    context = None if json_text_has_control_character(body) else {CONTROL_CHECKED: True}
    try:
        return ResultDocument.model_validate(data, context=context)
    except ValidationError as e:
        raise HTTPException(422, validation_message(e)) from None


WORKER_SETTINGS_ENV = "_INFERFLEET_COLLECTOR_WORKER"  # serve -> its uvicorn worker processes
WORKER_DB_ENV = "_INFERFLEET_COLLECTOR_DB"  # the database URL (password included) for the workers


def app_from_env() -> FastAPI:
    """The app of one uvicorn worker process (``agent collector serve --workers N``).

    The parent migrated the database and put the settings in the environment
    (inherited, never on a command line); secrets stay where the parent read them."""
    import os

    from agent.collector.db import make_engine

    s = json.loads(os.environ[WORKER_SETTINGS_ENV])
    read = os.environ.get(s["read_token_env"], "").strip() or None
    return create_app(make_engine(os.environ[WORKER_DB_ENV]), os.environ[s["token_env"]].strip(),
                      max_body_bytes=s["max_body"], read_token=read)


def run_summary(row) -> dict:  # noqa: ANN001
    m = dict(row._mapping)
    out = {k: v for k, v in m.items() if k != "document"}
    for k in ("created_at", "received_at"):
        out[k] = _iso(out.get(k))
    return out


def _bearer(request: Request) -> bytes:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    return given.strip().encode()


def _matches(given: bytes, tokens: list[bytes]) -> bool:
    ok = False
    for t in tokens:  # every token compared, in constant time
        ok |= hmac.compare_digest(given, t)
    return ok


class _FastPath:
    """ASGI middleware: ``method path`` goes straight to ``handler``, the rest to the app."""

    def __init__(self, app, path: str, method: str, handler) -> None:  # noqa: ANN001
        self.app, self.path, self.method, self.handler = app, path, method, handler

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] == "http" and scope["path"] == self.path and scope["method"] == self.method:
            await self.handler(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def create_app(engine: Engine, token: str, max_body_bytes: int = DEFAULT_MAX_BODY,
               read_token: str | None = None) -> FastAPI:
    if not token:
        raise ValueError("the collector needs a non-empty write token")
    write_tokens = [token.encode()]
    read_tokens = write_tokens + ([read_token.encode()] if read_token else [])
    from agent.collector.metrics import CONTENT_TYPE, IngestMetrics

    metrics = IngestMetrics()
    from agent.collector.latest import Folder

    folder = Folder(engine)  # the newest result per configuration, folded in while ingest is idle
    app = FastAPI(
        title="inferfleet collector",
        version=__version__,
        description="Gathers `agent bench` result documents from every node, exactly once, "
        "and answers fleet queries.",
    )

    def require_token(request: Request) -> None:
        if not _matches(_bearer(request), write_tokens):
            raise HTTPException(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})

    def require_read_token(request: Request) -> None:
        if not _matches(_bearer(request), read_tokens):
            raise HTTPException(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if request.url.path == RESULTS_PATH and request.method == "POST":
            metrics.answered(exc.status_code)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics of this collector",
             response_class=Response)
    def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    @app.get(HEALTH_PATH, tags=["service"])
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
            415: {"description": "Content-Type is not application/json"},
            422: {"description": "wrong schema_version, unknown fields or invalid values"},
            503: {"description": "the database is unavailable: retry later"},
        },
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ResultDocument"}}}}},
    )
    async def post_result(request: Request) -> JSONResponse:
        if not is_json(request.headers.get("content-type")):
            raise HTTPException(415, "Content-Type must be application/json, got "
                                f"{request.headers.get('content-type') or 'none'!r}")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            raise HTTPException(413, f"body of {length} bytes exceeds the limit of {max_body_bytes} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                raise HTTPException(413, f"body exceeds the limit of {max_body_bytes} bytes")
        with metrics.seconds.time():
            doc, created = await run_in_threadpool(_accept, bytes(body))  # off the event loop, one hop
        metrics.answered(201 if created else 200)
        if created:
            folder.poke()
            metrics.results.inc(len(doc.results))
            return JSONResponse({"id": doc.id, "status": "created"}, status_code=201)
        return JSONResponse({"id": doc.id, "status": "duplicate"}, status_code=200)

    def _accept(body: bytes) -> tuple[ResultDocument, bool]:
        """Parse, validate and store: (the document, whether it was new)."""
        doc = parse_document(body)
        try:
            return doc, ingest(engine, doc)
        except (DataError, IntegrityError) as e:  # a value the database refuses: the document's fault
            raise HTTPException(422, f"the database refused a value: {str(e.orig).splitlines()[0]}") from None
        except OperationalError as e:  # locked, disconnected, out of space: an outage, retry later
            raise HTTPException(503, f"database unavailable: {str(e.orig).splitlines()[0]}") from None

    async def results_fast_path(scope, receive, send) -> None:  # noqa: ANN001
        """POST /v1/results without the framework's routing, dependency solving and
        exception middleware (a third of a small document's CPU): the same token check,
        handler and error answers as the declared route, which stays for the OpenAPI."""
        request = Request(scope, receive)
        try:
            require_token(request)
            response = await post_result(request)
        except HTTPException as exc:
            response = await _http_error(request, exc)
        await response(scope, receive, send)

    app.add_middleware(_FastPath, path=RESULTS_PATH, method="POST", handler=results_fast_path)

    @app.get("/v1/nodes", tags=["queries"], summary="Nodes with their newest facts",
             dependencies=[Depends(require_read_token)])
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

    @app.get("/v1/runs", tags=["queries"], summary="Runs, newest first, filtered",
             dependencies=[Depends(require_read_token)])
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

    @app.get("/v1/runs/{run_id}", tags=["queries"], summary="One run's whole result document",
             dependencies=[Depends(require_read_token)])
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
        for path, ops in schema["paths"].items():
            if path.startswith("/v1/"):
                for op in ops.values():
                    op["security"] = [{"bearer": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = custom_openapi
    return app
