"""The collector for real (uvicorn subprocess) against SQLite and PostgreSQL:
auth, validation, idempotent ingest, queries, OpenAPI, migrations."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collector_support import *  # noqa: E402,F403  (fixtures)
from collector_support import TOKEN, Collector, run_agent  # noqa: E402

from testing.synthetic_fleet import make_document, make_node  # noqa: E402

pytestmark = pytest.mark.slow


def doc_json(i: int = 1, **kw) -> str:
    return make_document(make_node(i), models=("resnet18", "squeezenet1_1"), **kw).model_dump_json()


def run_count(c: Collector) -> int:
    return len(c.get("/v1/runs", limit=1000).json())


def test_auth_required_for_writes_and_token_never_logged(collector):
    body = doc_json()
    r = collector.post(body, token=None)
    assert r.status_code == 401 and r.json()["detail"] == "missing bearer token"
    assert r.headers["www-authenticate"] == "Bearer"
    r = collector.post(body, token="wrong-" + TOKEN)
    assert r.status_code == 401 and r.json()["detail"] == "invalid bearer token"
    r = collector.post(body, token=None, Authorization=f"Basic {TOKEN}")
    assert r.status_code == 401
    assert run_count(collector) == 0
    r = collector.post(body)
    assert r.status_code == 201 and r.json()["status"] == "created"
    assert run_count(collector) == 1
    assert TOKEN not in collector.log.read_text()


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 400, "malformed JSON"),
    (b"\xff\xfe", 400, "malformed JSON"),
    (b"[1, 2]", 422, "must be a JSON object"),
    (json.dumps({"target": "triton"}).encode(), 422, "missing schema_version"),
])
def test_malformed_bodies_are_refused(collector, body, status, message):
    r = collector.post(body)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    assert run_count(collector) == 0


def test_schema_version_unknown_fields_and_invalid_values(collector):
    good = json.loads(doc_json())
    cases = [
        ({**good, "schema_version": "2.0"}, "unsupported schema_version '2.0': this collector accepts 1.0, 1.1, 1.2"),
        ({**good, "surprise": 1}, "unknown field 'surprise'"),
        ({**good, "results": [{**good["results"][0], "bogus": True}]}, "unknown field 'results.0.bogus'"),
        ({**good, "node": {**good["node"], "price_per_hour": "cheap"}}, "node.price_per_hour"),
        ({k: v for k, v in good.items() if k != "node"}, "invalid result document: node: Field required"),
    ]
    for body, message in cases:
        r = collector.post(json.dumps(body))
        assert r.status_code == 422, r.text
        assert message in r.json()["detail"], r.json()
    assert run_count(collector) == 0
    assert collector.get("/v1/nodes").json() == []


def test_oversized_bodies_are_refused(tmp_path):
    c = Collector(f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "c.log", max_body=20_000).start()
    try:
        big = make_document(make_node(1), models=("resnet18", "resnet50", "vgg16"),
                            batch_sizes=(1, 8, 32)).model_dump_json()
        assert len(big) > 20_000
        r = c.post(big)
        assert r.status_code == 413 and "exceeds the limit of 20000 bytes" in r.json()["detail"]

        def chunks():  # no Content-Length: the limit holds for streamed bodies too
            for i in range(0, len(big), 4096):
                yield big[i:i + 4096].encode()

        import httpx

        r = httpx.post(c.url + "/v1/results", content=chunks(), timeout=30,
                       headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        assert r.status_code == 413
        assert c.get("/v1/runs").json() == []
        assert c.post(doc_json()).status_code == 201  # small ones still pass
    finally:
        c.stop()


def test_ingest_is_idempotent_and_queries_filter(collector):
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    a = make_document(make_node(1), models=("resnet18",), formats=("eager", "onnx"), created_at=t0)
    b = make_document(make_node(1), models=("squeezenet1_1",), formats=("eager", "tensorrt"),
                      created_at=t0 + timedelta(hours=1), seed=1)
    c = make_document(make_node(2), models=("resnet18",), formats=("eager", "tensorrt"),
                      created_at=t0 + timedelta(hours=2))
    for d in (a, b, c):
        assert collector.post(d.model_dump_json()).status_code == 201
    r = collector.post(a.model_dump_json())
    assert r.status_code == 200 and r.json() == {"id": a.id, "status": "duplicate"}

    runs = collector.get("/v1/runs").json()
    assert [x["id"] for x in runs] == [c.id, b.id, a.id]  # newest first, each once
    assert runs[0]["stack"].startswith("driver=535.183.01 cuda=12.2")
    assert runs[0]["result_count"] == len(c.results) and "document" not in runs[0]
    ids = lambda **q: {x["id"] for x in collector.get("/v1/runs", **q).json()}  # noqa: E731
    assert ids(node="node-0001") == {a.id, b.id}
    assert ids(model="resnet18") == {a.id, c.id}
    assert ids(backend="tensorrt") == {b.id, c.id}
    assert ids(model="resnet18", backend="onnx") == {a.id}
    assert ids(since=(t0 + timedelta(minutes=30)).isoformat()) == {b.id, c.id}
    assert ids(until=(t0 + timedelta(minutes=30)).isoformat()) == {a.id}
    assert ids(node="nope") == set()
    assert collector.get("/v1/runs", limit=0).status_code == 422
    full = collector.get("/v1/runs", node="node-0002", full="true").json()
    assert full[0]["document"]["id"] == c.id

    one = collector.get(f"/v1/runs/{b.id}")
    assert one.status_code == 200
    assert one.json() == json.loads(b.model_dump_json())
    missing = collector.get("/v1/runs/does-not-exist")
    assert missing.status_code == 404 and "no run with id" in missing.json()["detail"]

    nodes = collector.get("/v1/nodes").json()
    assert [n["name"] for n in nodes] == ["node-0001", "node-0002"]
    assert nodes[0]["runs"] == 2 and nodes[0]["gpu_name"] == make_node(1).gpu_name
    assert nodes[0]["price_per_hour"] == make_node(1).price_per_hour
    assert nodes[0]["facts"]["tensorrt_version"] == "8.6.1"

    assert collector.post(b"{not json").status_code == 400
    assert collector.post(a.model_dump_json(), token=None).status_code == 401
    m = prometheus(collector)
    assert m[("inferfleet_collector_documents_total", (("outcome", "created"), ("status", "201")))] == 3
    assert m[("inferfleet_collector_documents_total", (("outcome", "duplicate"), ("status", "200")))] == 1
    assert m[("inferfleet_collector_documents_total", (("outcome", "refused"), ("status", "400")))] == 1
    assert m[("inferfleet_collector_documents_total", (("outcome", "refused"), ("status", "401")))] == 1
    assert m[("inferfleet_collector_results_total", ())] == sum(len(d.results) for d in (a, b, c))
    assert m[("inferfleet_collector_ingest_seconds_count", ())] == 5  # the 401 never had its body read


def prometheus(c: Collector) -> dict:
    """/metrics (open, like /healthz) parsed with prometheus-client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    r = c.get("/metrics", token=None)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(r.text) for s in f.samples}


def test_openapi_schema_describes_the_api(collector):
    spec = collector.get("/openapi.json").json()
    assert {"/v1/results", "/v1/nodes", "/v1/runs", "/v1/runs/{run_id}", "/healthz"} <= set(spec["paths"])
    post = spec["paths"]["/v1/results"]["post"]
    assert post["security"] == [{"bearer": []}]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/ResultDocument"
    assert "NodeFacts" in spec["components"]["schemas"]
    params = {p["name"] for p in spec["paths"]["/v1/runs"]["get"]["parameters"]}
    assert {"node", "model", "backend", "since", "until"} <= params


def test_serve_refuses_without_token_and_binds_loopback(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("INFERFLEET_")}
    r = run_agent("collector", "serve", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--token-env",
                  "INFERFLEET_NO_SUCH_TOKEN", env=env, timeout=60)
    assert r.returncode != 0
    assert "error: no collector write token: set the environment variable INFERFLEET_NO_SUCH_TOKEN" in r.stderr
    assert not (tmp_path / "x.db").exists()
    c = Collector(f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "c.log").start()
    try:
        assert "listening on http://127.0.0.1:" in c.log.read_text()
    finally:
        c.stop()


def test_bad_database_urls_are_one_line_errors(tmp_path):
    from collector_support import TOKEN_ENV, agent_env

    for url, message in [("mysql://x/y", "unsupported database 'mysql'"),
                         (f"sqlite:///{tmp_path}/missing/dir/c.db", "does not exist")]:
        r = run_agent("collector", "serve", "--db", url, "--token-env", TOKEN_ENV, env=agent_env(), timeout=60)
        assert r.returncode == 2, r.stderr
        assert message in r.stderr and "Traceback" not in r.stderr


def test_migrations_create_schema_and_sqlite_uses_wal(db_url):
    from sqlalchemy import inspect, text

    from agent.collector.db import current_revision, make_engine, migrate

    engine = make_engine(db_url)
    migrate(engine)
    migrate(engine)  # idempotent
    assert current_revision(engine) == "0004"
    assert {"nodes", "runs", "results", "alembic_version"} <= set(inspect(engine).get_table_names())
    if db_url.startswith("sqlite"):
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    engine.dispose()


@pytest.mark.postgres
def test_a_1_0_database_upgrades_to_1_1_and_keeps_its_results(db_url):
    """Migration 0002 (result schema 1.1) on a database that already holds 1.0 documents:
    the old rows stay (scenario NULL = a concurrency sweep) and a 1.1 scenario result
    lands beside them with its verdict."""
    from alembic import command
    from sqlalchemy import text

    from agent.collector.db import alembic_config, current_revision, make_engine, migrate
    from agent.collector.ingest import _upsert_node, ingest, result_rows, run_row, to_utc_naive
    from agent.collector.tables import results as results_table
    from agent.schema import ResultDocument, ScenarioResult

    engine = make_engine(db_url)
    command.upgrade(alembic_config(engine), "0001")
    doc0 = ResultDocument.model_validate({**json.loads(doc_json(1)), "schema_version": "1.0"})
    v11_columns = ("scenario", "scenario_valid", "scenario_metric", "cv_pct", "queue_us", "compute_us",
                   "power_w", "utilization_pct", "input", "tuning", "tuning_chosen")  # not in a 0001 database
    rows = [{k: v for k, v in r.items() if k not in v11_columns} for r in result_rows(doc0)]
    with engine.begin() as conn:
        _upsert_node(conn, doc0, to_utc_naive(doc0.created_at))
        conn.execute(text("INSERT INTO runs (id, node_name, created_at, received_at, target, hostname, stack, "
                          "result_count, document) VALUES (:id, :node_name, :created_at, :received_at, :target, "
                          ":hostname, :stack, :result_count, :document)"),
                     {k: v for k, v in run_row(doc0, to_utc_naive(doc0.created_at)).items()
                      if k in ("id", "node_name", "created_at", "received_at", "target", "hostname", "stack",
                               "result_count", "document")})
        for row in rows:
            cols = ", ".join(row)
            conn.execute(text(f"INSERT INTO results ({cols}) VALUES ({', '.join(':' + c for c in row)})"), row)
    migrate(engine)
    assert current_revision(engine) == "0004"
    new = ResultDocument.model_validate_json(doc_json(2))
    new.results[0].scenario = ScenarioResult(
        name="server", valid=False, invalid_reasons=["99th percentile latency above the target"],
        metric="scheduled_qps", metric_value=40.0, target_qps=40.0, target_latency_ms=15.0,
        latency_percentile=99, min_duration_ms=1000, min_query_count=100, queries=120, samples=120)
    assert ingest(engine, new)
    with engine.connect() as conn:
        got = conn.execute(results_table.select().order_by(results_table.c.id)).mappings().all()
    assert len(got) == len(rows) + len(new.results)
    assert all(r["scenario"] is None and r["cv_pct"] is None for r in got[:len(rows)])
    scen = [r for r in got if r["scenario"] is not None]
    assert [(r["scenario"], bool(r["scenario_valid"]), r["scenario_metric"]) for r in scen] == [
        ("server", False, 40.0)]
    engine.dispose()


def test_several_workers_store_each_document_exactly_once(postgres_server, tmp_path):
    """`--workers 2` on PostgreSQL: the same documents raced from 8 threads through two
    worker processes are stored once each (ON CONFLICT DO NOTHING, no SELECT first)."""
    from concurrent.futures import ThreadPoolExecutor

    c = Collector(new_postgres_db(postgres_server), tmp_path / "c.log",  # noqa: F405
                  extra_args=("--workers", "2")).start(timeout=120)
    try:
        bodies = [doc_json(i) for i in range(6)]
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda b: c.post(b).status_code, bodies * 8))
        assert sorted(codes).count(201) == 6 and sorted(codes).count(200) == 42, codes
        assert run_count(c) == 6
        assert len(c.get("/v1/nodes").json()) == 6
        assert "with 2 worker(s)" in c.log.read_text()
        m = prometheus(c)  # both workers' counts, whichever answers
        assert m[("inferfleet_collector_documents_total", (("outcome", "created"), ("status", "201")))] == 6
        assert m[("inferfleet_collector_documents_total", (("outcome", "duplicate"), ("status", "200")))] == 42
    finally:
        c.stop()


def _bracket_walk(body: bytes) -> int:
    """The reference depth: strings skipped, every bracket counted, one at a time."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in body:
        if in_string:
            escaped, in_string = (not escaped and ch == 0x5C), in_string and (escaped or ch != 0x22)
        elif ch == 0x22:
            in_string = True
        elif ch in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in b"]}":
            depth -= 1
    return deepest


@pytest.mark.parametrize("body", [
    b"{}", b"[[[]]]", b'{"a": [1, {"b": "[[[["}]}', b'{"a\\"[": [[]]}', b'["\\\\", [[]]]',
    b'["\\n\\"[", [[]]]', b'[["]", [[]], "["]]', b"[" * 40 + b"]" * 40, b'{"k": "]]]]}}}}"}',
])
def test_json_depth_counts_like_a_bracket_walk(body):
    from agent.collector.app import json_depth

    assert json_depth(body) == _bracket_walk(body)


def test_a_document_parses_as_the_standard_library_parses_it(monkeypatch):
    """orjson first, the standard library for what orjson refuses: same documents, same answers."""
    from fastapi import HTTPException

    import agent.collector.app as app_module

    good = make_document(make_node(3), doc_id="same").model_dump_json()
    bodies = [good.encode(), good.encode("utf-16"), good.replace('"same"', '"s\\ud800"').encode(),
              b'{"schema_version": "1.1", "x": NaN}', good.replace('"same"', '"' + "9" * 30 + '"').encode(),
              good[:-1].encode(), b'{"schema_version": "1.1", "id": Infinity}']

    def outcome(body: bytes):  # noqa: ANN202
        try:
            return app_module.parse_document(body).model_dump()
        except HTTPException as e:
            return e.status_code, e.detail

    fast = [outcome(b) for b in bodies]
    monkeypatch.setattr(app_module, "_loads", lambda b: json.loads(b, parse_constant=app_module._no_constants))
    assert fast == [outcome(b) for b in bodies]
    assert fast[0]["id"] == "same" and fast[5][0] == 400
    assert fast[3][0] == 422 and "invalid JSON value" in fast[3][1]


def test_bulk_insert_stores_what_sqlalchemy_stores(db_url):
    """A document's results through the driver (COPY / executemany) read back exactly as
    SQLAlchemy's own insert of the same rows: times, booleans, NULLs, scenario columns."""
    from sqlalchemy import insert, select

    from agent.collector import ingest as ing
    from agent.collector.db import make_engine, migrate
    from agent.collector.tables import results

    engine = make_engine(db_url)
    migrate(engine)
    doc = make_document(make_node(1), doc_id="driver", scenarios=("offline", "server"), stability=True)
    assert ing.ingest(engine, doc) and not ing.ingest(engine, doc)
    twin = doc.model_copy(update={"id": "sqlalchemy"})
    with engine.begin() as conn:
        conn.execute(ing._statement(conn, "run"), ing.run_row(twin, ing.to_utc_naive(datetime.now(UTC))))
        conn.execute(insert(results), ing.result_rows(twin))
    cols = [c for c in results.c if c.name not in ("id", "run_id")]
    with engine.connect() as conn:
        stored = {run: [tuple(r) for r in conn.execute(
            select(*cols).where(results.c.run_id == run).order_by(results.c.id))] for run in ("driver", "sqlalchemy")}
        if engine.dialect.name == "sqlite":  # the same text in the file, not only the same values read back
            raw = conn.exec_driver_sql("SELECT DISTINCT created_at, typeof(stable) FROM results").all()
            assert len(raw) == 1, raw
    engine.dispose()
    assert len(stored["driver"]) == len(doc.results) and stored["driver"] == stored["sqlalchemy"]
    assert any(r[cols.index(results.c.scenario)] == "offline" for r in stored["driver"])
