"""Spool + push against a real collector: acknowledgement, retries, backoff,
rejection, the lock, the CLI."""

from __future__ import annotations

import http.server
import json
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collector_support import TOKEN, TOKEN_ENV, Collector, agent_env, free_port, run_agent  # noqa: E402

from agent.config import AgentConfig  # noqa: E402
from agent.errors import AgentError  # noqa: E402
from testing.synthetic_fleet import make_document, make_node  # noqa: E402
from agent.collector.push import backoff_delay, push_spool, spool_document, spool_lock, spooled  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def config(tmp_path, monkeypatch) -> AgentConfig:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return AgentConfig(node_name="node-0001", state_dir=tmp_path / "state", collector_token_env=TOKEN_ENV)


def docs(n: int, node: int = 1):
    return [make_document(make_node(node), models=("resnet18",), formats=("eager", "onnx"),
                          batch_sizes=(1,), seed=k) for k in range(n)]


@pytest.fixture
def sqlite_collector(tmp_path):
    c = Collector(f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "c.log").start()
    yield c
    c.stop()


def stored_ids(c: Collector) -> list[str]:
    return [r["id"] for r in c.get("/v1/runs", limit=1000).json()]


def test_spool_writes_one_complete_file_per_document(config):
    d = docs(2)
    paths = [spool_document(x, config) for x in d]
    assert [p.name for p in paths] == [f"{x.id}.json" for x in d]
    assert sorted(spooled(config.spool_dir)) == sorted(paths)
    assert json.loads(paths[0].read_text())["id"] == d[0].id
    assert [p.name for p in config.spool_dir.iterdir() if p.name.startswith(".tmp-")] == []


def test_push_delivers_and_empties_the_spool_duplicates_acknowledged(config, sqlite_collector):
    d = docs(3)
    for x in d:
        spool_document(x, config)
    s = push_spool(config, collector_url=sqlite_collector.url)
    assert (s.sent, s.duplicates, s.remaining) == (3, 0, 0)
    assert spooled(config.spool_dir) == []
    assert sorted(stored_ids(sqlite_collector)) == sorted(x.id for x in d)
    spool_document(d[0], config)  # the acknowledgement was "lost": sent again
    s = push_spool(config, collector_url=sqlite_collector.url)
    assert (s.sent, s.duplicates) == (0, 1)
    assert len(stored_ids(sqlite_collector)) == 3


def test_collector_down_keeps_every_document(config):
    for x in docs(2):
        spool_document(x, config)
    with pytest.raises(AgentError) as e:
        push_spool(config, collector_url=f"http://127.0.0.1:{free_port()}", timeout=1)
    assert "2 result document(s) remain in the spool" in str(e.value)
    assert "unreachable (ConnectError" in str(e.value)
    assert TOKEN not in str(e.value)
    assert len(spooled(config.spool_dir)) == 2


def test_5xx_is_retried_with_backoff_and_kept(config):
    hits = []

    class Failing(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            hits.append(time.monotonic())
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"detail": "database is restarting"}')

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        spool_document(docs(1)[0], config)
        with pytest.raises(AgentError) as e:
            push_spool(config, collector_url=f"http://127.0.0.1:{srv.server_port}", retry_for=3)
        assert "answered 503 database is restarting" in str(e.value)
        assert len(hits) >= 2  # retried within the window
        assert len(spooled(config.spool_dir)) == 1
    finally:
        srv.shutdown()


def test_retry_for_waits_for_the_collector_to_come_back(config, tmp_path):
    for x in docs(4):
        spool_document(x, config)
    c = Collector(f"sqlite:///{tmp_path / 'late.db'}", tmp_path / "late.log")
    starter = threading.Timer(2.0, c.start)
    starter.start()
    try:
        s = push_spool(config, collector_url=c.url, retry_for=60, timeout=2)
        assert s.sent == 4 and spooled(config.spool_dir) == []
        assert len(stored_ids(c)) == 4
    finally:
        starter.join()
        c.stop()


def test_wrong_or_missing_token_and_url(config, sqlite_collector, monkeypatch):
    spool_document(docs(1)[0], config)
    monkeypatch.setenv(TOKEN_ENV, "not-the-token")
    with pytest.raises(AgentError, match="refused the token \\(401 invalid bearer token\\)"):
        push_spool(config, collector_url=sqlite_collector.url)
    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(AgentError, match=f"environment variable {TOKEN_ENV} is not set"):
        push_spool(config, collector_url=sqlite_collector.url)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with pytest.raises(AgentError, match="no collector URL"):
        push_spool(config)
    with pytest.raises(AgentError, match="must be http://HOST"):
        push_spool(config, collector_url="ftp://x")
    assert len(spooled(config.spool_dir)) == 1
    assert stored_ids(sqlite_collector) == []


def test_rejected_document_is_kept_aside_not_lost(config, sqlite_collector):
    good = docs(1)[0]
    spool_document(good, config)
    bad = config.spool_dir / "broken.json"
    bad.write_text('{"schema_version": "9.9"}')
    with pytest.raises(AgentError, match="rejected 1 document.*broken.json: 422 unsupported schema_version") as e:
        push_spool(config, collector_url=sqlite_collector.url)
    assert e.value.code == 3
    assert (config.spool_dir / "dead-letter" / "broken.json").exists()
    assert "422 unsupported schema_version" in (config.spool_dir / "dead-letter" / "broken.reason").read_text()
    assert stored_ids(sqlite_collector) == [good.id]


def test_lock_keeps_a_second_pusher_out(config, sqlite_collector):
    spool_document(docs(1)[0], config)
    with spool_lock(config.spool_dir, wait_s=0):
        with pytest.raises(AgentError, match="another push holds"):
            with spool_lock(config.spool_dir, wait_s=0.3):
                pass
    push_spool(config, collector_url=sqlite_collector.url)
    assert spooled(config.spool_dir) == []


def test_backoff_grows_and_is_capped():
    import random

    rng = random.Random(1)
    means = [sum(backoff_delay(a, rng) for _ in range(200)) / 200 for a in (0, 3, 6, 20)]
    assert means[0] < means[1] < means[2] and means[3] <= 30.05


def test_cli_report_push(tmp_path, sqlite_collector):
    env = agent_env(INFERFLEET_STATE_DIR=str(tmp_path / "state"))
    r = run_agent("report", "push", "--collector", sqlite_collector.url, env=env)
    assert r.returncode == 0 and "nothing to push" in r.stdout
    config = AgentConfig(state_dir=tmp_path / "state")
    for x in docs(2, node=3):
        spool_document(x, config)
    r = run_agent("report", "push", "--collector", sqlite_collector.url, env=env)
    assert r.returncode == 0, r.stderr
    assert "pushed 2 new, 0 already stored" in r.stdout
    assert TOKEN not in r.stdout + r.stderr
    spool_document(docs(1, node=4)[0], config)
    r = run_agent("report", "push", "--collector", f"http://127.0.0.1:{free_port()}", "--timeout", "1",
                  env=env)
    assert r.returncode == 2
    assert r.stderr.startswith("error: 1 result document(s) remain in the spool")
    assert len(r.stderr.strip().splitlines()) == 1
