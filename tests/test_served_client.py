"""The served benchmark's client side against a real Triton (the bundled CPU
tritonserver, python backend, squeezenet1_1 ONNX): the client phases (Client Send /
Client Recv) are measured and fit inside the latency with the server's own times,
perf_analyzer's CSV (and its verbose variant) carries them, and Triton's request
count agrees with the client's."""

from __future__ import annotations

import csv
import io
import shutil

import pytest

pytestmark = [pytest.mark.triton, pytest.mark.slow, pytest.mark.timeout(600)]

MODEL = "squeezenet1_1"


@pytest.fixture(scope="module")
def server(built_engines, tmp_path_factory):
    from agent.triton.repo import RepoOptions, write_repository
    from agent.triton.server import ServerSettings, start, stop
    from testing.ports import free_port

    root = tmp_path_factory.mktemp("served-client")
    engines = root / "engines"
    shutil.copytree(built_engines, engines, ignore=shutil.ignore_patterns("triton-repo"))
    repo = root / "repo"
    write_repository(engines, repo, RepoOptions(backend="python", models=(MODEL,), formats=("onnx",)))
    s = ServerSettings(repo=repo, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                       state_dir=root / "state")
    started = start(s, timeout=240)
    try:
        assert not started.report.failed, started.report.failed
        yield s, engines
    finally:
        stop(s, quiet=True)


def opts(engines, url: str, protocol: str, concurrency: list[int]):
    from agent.bench.options import BenchOptions

    return BenchOptions(models=[MODEL], formats=["onnx"], batch_sizes=[1], engines_dir=engines, warmup=2,
                        window_seconds=0.5, stability_pct=10.0, max_windows=3, url=url, protocol=protocol,
                        concurrency=concurrency)


def rows(text: str) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(io.StringIO(text))]


def test_http_client_phases_in_result_and_csv(server):
    from agent.bench.csvout import COLUMNS, VERBOSE_COLUMNS, perf_analyzer_csv
    from agent.bench.served import run_served
    from agent.config import load_config

    s, engines = server
    doc = run_served(opts(engines, f"127.0.0.1:{s.http_port}", "http", [1, 2]), load_config())
    for r in doc.results:
        assert r.client is not None and r.client.send_us > 0 and r.client.recv_us > 0
        assert r.server is not None and r.server.compute_infer_us > 0
        # the server's statistics span the same windows as the client's count
        assert abs(r.server.request_count - r.requests) <= 2 * r.concurrency * 3, (r.server, r.requests)
    plain = perf_analyzer_csv(doc)
    assert plain.splitlines()[0].split(",") == COLUMNS
    verbose = rows(perf_analyzer_csv(doc, verbose=True))
    assert list(verbose[0]) == COLUMNS + VERBOSE_COLUMNS and len(verbose) == 2
    for row in verbose:
        for col in ("Client Send", "Client Recv", "Server Compute Input", "Server Compute Infer",
                    "Server Compute Output", "Avg latency", "request/response", "response wait"):
            assert row[col] > 0, (col, row)
        assert row["request/response"] == pytest.approx(row["Client Send"] + row["Client Recv"], abs=1)
        assert row["response wait"] == pytest.approx(row["Avg latency"] - row["request/response"], abs=1)
        accounted = (row["Client Send"] + row["Client Recv"] + row["Server Queue"] + row["Server Compute Input"]
                     + row["Server Compute Infer"] + row["Server Compute Output"])
        # client phases + the server's own time fit in the mean latency (2 % slack: the server's
        # and the client's request sets differ by the requests in flight at a window's edge)
        assert accounted <= row["Avg latency"] * 1.02 + 5, row
        total = accounted + row["Network+Server Send/Recv"]
        assert total == pytest.approx(max(row["Avg latency"], accounted), abs=5)
        assert row["p99 latency"] >= row["p50 latency"] > 0


def test_grpc_client_recv_measured_send_not(server):
    from agent.bench.csvout import perf_analyzer_csv
    from agent.bench.served import run_served
    from agent.config import load_config

    s, engines = server
    doc = run_served(opts(engines, f"127.0.0.1:{s.grpc_port}", "grpc", [2]), load_config())
    (r,) = doc.results
    assert r.protocol == "grpc" and r.client.send_us is None and r.client.recv_us > 0
    (row,) = rows(perf_analyzer_csv(doc, verbose=True))
    assert row["Client Send"] == 0 and row["Client Recv"] > 0 and row["Server Compute Infer"] > 0


def test_server_request_count_equals_the_clients(server):
    """A span that starts and ends with nothing in flight: Triton's success count moves by
    exactly the client's count (and per window, within the requests in flight at its edges)."""
    from agent.bench.served import LoadGenerator, _served_models, _stats, breakdown
    from agent.triton.client import connect

    s, engines = server
    url = f"127.0.0.1:{s.http_port}"
    client = connect(url, "http")
    try:
        served = _served_models(client, "http", opts(engines, url, "http", [2]))[0]
        stats = lambda: _stats(client, "http", served.record.name)
        before = stats()
        gen = LoadGenerator(url, "http", served, 1, 2, stats=stats)
        with gen:
            gen.wait_for(4)
            window = gen.window(0.5, None)
            gen.wait_for(gen.count + 6)
        after = stats()  # the threads are joined: nothing in flight
        b = breakdown(before, after)
        assert b is not None and b.request_count == gen.count > 10
        (log,) = gen.log
        assert log.requests == window.requests > 0
        in_window = log.stats_after["success"][0] - log.stats_before["success"][0]
        assert abs(in_window - window.requests) <= 2 * 2, (in_window, window.requests)
    finally:
        client.close()
