"""No bad document, bad value or bad body can corrupt or block the fleet's numbers
(issue #11, ingest and spool). A real collector on SQLite and on PostgreSQL
must accept and refuse exactly the same documents, always with a 4xx and a
reason (never a 500); a node's spool must deliver every good document even
when one of them is refused for good."""

from __future__ import annotations

import http.server
import json
import os
import sys
import threading
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collector_support import *  # noqa: E402,F403  (fixtures)
from collector_support import TOKEN, TOKEN_ENV, Collector, agent_env, run_agent  # noqa: E402

from agent.config import AgentConfig  # noqa: E402
from testing.synthetic_fleet import make_document, make_node  # noqa: E402
from agent.collector.push import DEAD_LETTER_DIR, push_spool, spool_document, spooled  # noqa: E402
from agent.schema import utcnow  # noqa: E402

pytestmark = pytest.mark.slow


def good() -> dict:
    return json.loads(make_document(make_node(1), formats=("eager", "onnx"), batch_sizes=(1,)).model_dump_json())


def edit(path: str, value) -> bytes:  # noqa: ANN001
    doc = good()
    *parents, last = path.split(".")
    t = doc
    for p in parents:
        t = t[int(p)] if isinstance(t, list) else t[p]
    t[last] = value
    return json.dumps(doc).encode()


def raw(path: str, literal: str) -> bytes:
    """A document whose value at ``path`` is written as a raw JSON literal (NaN, 1e999...)."""
    return edit(path, "__RAW__").replace(b'"__RAW__"', literal.encode())


DEEP = b'{"schema_version": "1.0", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"

# (case, body, expected status, words of the reason)
REFUSED = [
    ("NaN latency", raw("results.0.latency_ms.p99", "NaN"), 422, "finite"),
    ("Infinity throughput", raw("results.0.throughput_ips", "Infinity"), 422, "finite"),
    ("1e999 throughput", raw("results.0.throughput_ips", "1e999"), 422, "finite"),
    ("negative latency", edit("results.0.latency_ms.p50", -3.0), 422, "greater than or equal to 0"),
    ("p99 below p95", edit("results.0.latency_ms.p99", 0.0001), 422, "out of order"),
    ("batch 0", edit("results.0.batch_size", 0), 422, "batch_size"),
    ("batch 2**40", edit("results.0.batch_size", 2**40), 422, "batch_size"),
    ("huge integer", raw("results.0.requests", "9" * 5000), 422, "invalid JSON value"),
    ("concurrency 0", edit("results.0.concurrency", 0), 422, "concurrency"),
    ("NUL in node name", edit("node.node_name", "node\x00"), 422, "control character"),
    ("NUL in cpu", edit("node.cpu", "Xeon\x00"), 422, "control character"),
    ("empty node name", edit("node.node_name", ""), 422, "node.node_name"),
    ("space in node name", edit("node.node_name", "node one"), 422, "node.node_name"),
    ("300-char node name", edit("node.node_name", "n" * 300), 422, "node.node_name"),
    ("65-char id", edit("id", "i" * 65), 422, "id"),
    ("id with quotes", edit("id", "a'b"), 422, "id"),
    ("future timestamp", edit("created_at", (utcnow() + timedelta(days=400)).isoformat()), 422, "future"),
    ("negative price", edit("node.price_per_hour", -1.0), 422, "price_per_hour"),
    ("100,000-deep JSON", DEEP, 400, "nested 100001 deep"),
]

ACCEPTED = [
    ("unicode facts", edit("node.cpu", "Intel® Xeon® — 2,1 GHz ✓")),
    ("price 0", edit("node.price_per_hour", 0.0)),
    ("a minute ahead", edit("created_at", (utcnow() + timedelta(minutes=1)).isoformat())),
    ("big finite float", edit("results.0.throughput_ips", 1e300)),
]


def test_sqlite_and_postgres_accept_and_refuse_the_same_documents(collector):
    """Every refusal is a 4xx with its reason and stores nothing, on both databases."""
    for case, body, status, words in REFUSED:
        r = collector.post(body)
        assert r.status_code == status, (case, r.status_code, r.text[:300])
        assert words in r.json()["detail"], (case, r.json())
    assert collector.get("/v1/runs", limit=1000).json() == []
    assert collector.get("/v1/nodes").json() == []
    for case, body in ACCEPTED:
        doc = json.loads(body)
        doc["id"] = f"edge-{len(case)}-{case.split()[0]}"
        r = collector.post(json.dumps(doc))
        assert r.status_code == 201, (case, r.text[:300])
    assert len(collector.get("/v1/runs", limit=1000).json()) == len(ACCEPTED)
    assert "Traceback" not in collector.log.read_text()


def test_content_type_must_be_json(collector):
    body = json.dumps(good())
    for ctype in ("text/plain", "application/x-www-form-urlencoded", ""):
        r = httpx.post(collector.url + "/v1/results", content=body, timeout=30,
                       headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": ctype})
        assert r.status_code == 415, (ctype, r.text)
        assert "Content-Type must be application/json" in r.json()["detail"]
    assert collector.post(body, **{"Content-Type": "application/json; charset=utf-8"}).status_code == 201


@pytest.fixture
def sqlite_collector(tmp_path):
    c = Collector(f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "c.log", read_token="read-" + TOKEN).start()
    yield c
    c.stop()


def test_reads_need_a_token_and_the_read_token_cannot_write(sqlite_collector):
    c = sqlite_collector
    assert c.post(json.dumps(good())).status_code == 201
    for path in ("/v1/runs", "/v1/nodes", "/v1/runs/whatever"):
        assert c.get(path, token=None).status_code == 401, path
        assert c.get(path, token="wrong").status_code == 401, path
    assert len(c.get("/v1/runs", token="read-" + TOKEN).json()) == 1
    assert len(c.get("/v1/runs", token=TOKEN).json()) == 1  # the write token reads too
    assert c.post(json.dumps(good()), token="read-" + TOKEN).status_code == 401
    for open_path in ("/healthz", "/openapi.json", "/docs"):
        assert c.get(open_path, token=None).status_code == 200, open_path
    spec = c.get("/openapi.json", token=None).json()
    assert spec["paths"]["/v1/runs"]["get"]["security"] == [{"bearer": []}]


# ------------------------------------------------------------------ spool

@pytest.fixture
def config(tmp_path, monkeypatch) -> AgentConfig:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return AgentConfig(node_name="node-0001", state_dir=tmp_path / "state", collector_token_env=TOKEN_ENV)


def spool_raw(config: AgentConfig, name: str, body: bytes) -> None:
    config.spool_dir.mkdir(parents=True, exist_ok=True)
    (config.spool_dir / f"{name}.json").write_bytes(body)


def test_a_refused_document_never_blocks_the_spool(tmp_path, sqlite_collector):
    """Today's bad documents (NaN on SQLite, 100,000-deep JSON) stayed first in line forever."""
    env = agent_env(INFERFLEET_STATE_DIR=str(tmp_path / "state"))
    config = AgentConfig(state_dir=tmp_path / "state")
    spool_raw(config, "0-nan", raw("results.0.latency_ms.p99", "NaN"))
    spool_raw(config, "1-deep", DEEP)
    goods = [make_document(make_node(2), formats=("eager",), batch_sizes=(1,), seed=k) for k in range(3)]
    for d in goods:
        spool_document(d, config)
    os.utime(config.spool_dir / "0-nan.json", (1, 1))  # oldest: first in line
    os.utime(config.spool_dir / "1-deep.json", (2, 2))
    r = run_agent("report", "push", "--collector", sqlite_collector.url, env=env)
    assert r.returncode == 3, r.stderr
    assert r.stderr.count("dead-lettered") == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: the collector rejected 2 document(s)")
    stored = {x["id"] for x in sqlite_collector.get("/v1/runs", limit=100).json()}
    assert stored == {d.id for d in goods}
    dead = config.spool_dir / DEAD_LETTER_DIR
    assert sorted(p.name for p in dead.iterdir()) == ["0-nan.json", "0-nan.reason", "1-deep.json", "1-deep.reason"]
    assert "422" in (dead / "0-nan.reason").read_text() and "finite" in (dead / "0-nan.reason").read_text()
    assert "400" in (dead / "1-deep.reason").read_text()
    # reported once: the next push has nothing to say and succeeds
    r = run_agent("report", "push", "--collector", sqlite_collector.url, env=env)
    assert r.returncode == 0 and "nothing to push" in r.stdout, r.stderr
    # and they can be put back in line on purpose
    r = run_agent("report", "push", "--collector", sqlite_collector.url, "--requeue-dead-letter", env=env)
    assert r.returncode == 3 and "requeued 2" in r.stdout, r.stdout + r.stderr


class _PoisonCollector(http.server.BaseHTTPRequestHandler):
    """A collector that answers 500 to one document (a bug it cannot recover from) and
    201 to the others; /healthz says whether it is up. A stand-in: the real collector no
    longer answers 500 to any document we know of."""

    poison_id = ""
    healthy = True
    posts: list[str] = []

    def do_GET(self):  # noqa: N802
        self.send_response(200 if self.healthy else 500)
        self.end_headers()

    def do_POST(self):  # noqa: N802
        doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).posts.append(doc["id"])
        self.send_response(500 if doc["id"] == self.poison_id else 201)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"detail": "Internal Server Error"}' if doc["id"] == self.poison_id else b"{}")

    def log_message(self, *a):
        pass


@pytest.mark.parametrize("healthy", [True, False], ids=["collector-healthy", "collector-down"])
def test_repeated_5xx_for_one_document_is_permanent_only_while_the_collector_is_healthy(config, healthy):
    docs = [make_document(make_node(3), formats=("eager",), batch_sizes=(1,), seed=k) for k in range(3)]
    for i, d in enumerate(docs):
        path = spool_document(d, config)
        os.utime(path, (10 + i, 10 + i))
    handler = type("H", (_PoisonCollector,), {"poison_id": docs[0].id, "healthy": healthy, "posts": []})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    from agent.errors import AgentError

    try:
        with pytest.raises(AgentError) as e:
            push_spool(config, collector_url=f"http://127.0.0.1:{srv.server_port}")
    finally:
        srv.shutdown()
    if healthy:  # the poison document is set aside after 3 strikes, the others delivered
        assert e.value.code == 3 and "3 times in a row while the collector was healthy" in str(e.value)
        assert handler.posts == [docs[0].id] * 3 + [docs[1].id, docs[2].id]
        assert spooled(config.spool_dir) == []
        assert (config.spool_dir / DEAD_LETTER_DIR / f"{docs[0].id}.json").is_file()
    else:  # an outage: nothing is dead-lettered, everything stays for the next push
        assert e.value.code == 2 and "is not healthy" in str(e.value)
        assert len(spooled(config.spool_dir)) == 3
        assert not (config.spool_dir / DEAD_LETTER_DIR).exists()


def test_bad_collector_url_is_refused_even_with_an_empty_spool(tmp_path):
    env = agent_env(INFERFLEET_STATE_DIR=str(tmp_path / "state"))
    for url in ("ftp://x", "http://", "localhost:8080", "http://host:notaport"):
        r = run_agent("report", "push", "--collector", url, env=env)
        assert r.returncode == 2, (url, r.stdout)
        assert r.stderr.startswith("error: collector URL"), r.stderr


@pytest.mark.postgres
def test_postgres_password_from_a_file_never_on_the_command_line(postgres_server, tmp_path):
    from sqlalchemy.engine import make_url

    url = make_url(new_postgres_db(postgres_server))  # noqa: F405
    password = url.password
    pwfile = tmp_path / "pw"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    bare = f"postgresql://{url.username}@{url.host}:{url.port}/{url.database}"
    c = Collector(bare, tmp_path / "c.log", extra_args=("--db-password-file", str(pwfile))).start()
    try:
        cmdline = Path(f"/proc/{c.proc.pid}/cmdline").read_bytes()
        assert password.encode() not in cmdline
        assert c.post(json.dumps(good())).status_code == 201
    finally:
        c.stop()
    assert password not in c.log.read_text()
    # the same from the environment
    c = Collector(bare, tmp_path / "c2.log", env={"INFERFLEET_DB_PASSWORD": password}).start()
    try:
        assert password.encode() not in Path(f"/proc/{c.proc.pid}/cmdline").read_bytes()
        assert len(c.get("/v1/runs").json()) == 1
    finally:
        c.stop()
