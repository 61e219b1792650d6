"""Collector ingest rate: 8 concurrent pushers against a real collector.

For SQLite (1 worker) and PostgreSQL (1 and N workers), small documents
(18 results) and large ones (372 results): documents/s and results/s, each
pusher a separate process posting pre-serialised documents over keep-alive
connections (what `agent report push` does). Configurations are measured in
interleaved rounds (A/B/A/B) so that load drift hits each alike; the median
of the rounds is printed with the load average.

    .venv/bin/python benchmarks/bench_ingest.py [--rounds 3] [--seconds 6] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

PUSHERS = 8
SIZES = {"small": dict(models=("resnet18", "resnet50", "mobilenet_v2"), formats=("eager", "onnx", "tensorrt"),
                       batch_sizes=(1, 8)),  # 18 results
         "large": dict(models="all", formats=None, batch_sizes=(1, 8, 32))}  # 31 x 4 x 3 = 372 results


_TEMPLATES: dict[tuple[str, int], bytes] = {}


def _bodies(size: str, node: int, count: int, tag: str) -> list[bytes]:
    """``count`` documents of one node, each with its own id (one template, ids substituted)."""
    from testing.synthetic_fleet import MODELS, make_document, make_node

    if (size, node) not in _TEMPLATES:
        kw = {k: v for k, v in SIZES[size].items() if v is not None}
        if kw["models"] == "all":
            kw["models"] = tuple(MODELS)
        _TEMPLATES[(size, node)] = make_document(make_node(node), doc_id="ID-PLACEHOLDER", **kw) \
            .model_dump_json().encode()
    t = _TEMPLATES[(size, node)]
    return [t.replace(b"ID-PLACEHOLDER", f"{tag}-{node}-{k}".encode(), 1) for k in range(count)]


def _pusher(url: str, token: str, bodies: list[bytes], start_at: float, seconds: float, out) -> None:  # noqa: ANN001
    """Post ``bodies`` one after the other over one keep-alive connection (the standard
    library's http.client: the cheapest client, so that the cores measure the server)."""
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    sent = 0
    while time.time() < start_at:
        time.sleep(0.001)
    cpu0, end = time.process_time(), start_at + seconds
    for body in bodies:
        if time.time() >= end:
            break
        conn.request("POST", "/v1/results", body=body, headers=headers)
        r = conn.getresponse()
        text = r.read()
        assert r.status == 201, text[:200]
        sent += 1
    out.put((sent, time.time() - start_at, time.process_time() - cpu0))
    conn.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, its live children (uvicorn's workers, PostgreSQL's
    backends) and the children it has reaped (a backend whose connection was closed)."""
    import psutil

    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    t = procs[0].cpu_times()
    total = t.children_user + t.children_system
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


class Rate(NamedTuple):
    docs: float  # documents/s
    results: float  # result rows/s
    server_ms: float  # CPU ms per document: the collector (all its workers)
    db_ms: float  # ... PostgreSQL's processes (0 for SQLite: it runs inside the collector)
    pushers_ms: float  # ... the 8 pushers


def _postgres_pid(pg_dir: str | None) -> int | None:
    if not pg_dir:
        return None
    try:
        return int(Path(pg_dir, "data", "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def measure(collector, size: str, seconds: float, round_no: int, pg_pid: int | None) -> Rate:  # noqa: ANN001
    from collector_support import TOKEN

    per = {"small": 4000, "large": 600}[size]
    tag = f"{size}-{round_no}-{collector.port}"
    bodies = [_bodies(size, n, per, tag) for n in range(PUSHERS)]
    results = len(json.loads(bodies[0][0])["results"])
    q: mp.Queue = mp.Queue()
    start_at = time.time() + 1.0
    procs = [mp.Process(target=_pusher, args=(collector.url, TOKEN, b, start_at, seconds, q)) for b in bodies]
    for p in procs:
        p.start()
    while time.time() < start_at - 0.05:
        time.sleep(0.01)
    server0 = _cpu_seconds(collector.proc.pid)
    db0 = _cpu_seconds(pg_pid) if pg_pid else 0.0
    got = [q.get(timeout=seconds + 120) for _ in procs]
    server = _cpu_seconds(collector.proc.pid) - server0
    db = (_cpu_seconds(pg_pid) - db0) if pg_pid else 0.0
    for p in procs:
        p.join()
    docs = sum(n for n, _, _ in got)
    wall = max(t for _, t, _ in got)
    per_doc = 1000 / max(docs, 1)
    return Rate(docs / wall, docs * results / wall, server * per_doc, db * per_doc,
                sum(c for _, _, c in got) * per_doc)


def phases(url: str, size: str, count: int) -> dict[str, float]:
    """CPU ms per document of the collector's own two steps, in this process, without
    HTTP: parse + validate (agent.collector.app.parse_document) and store
    (agent.collector.ingest.ingest); the rest of the server's CPU in the HTTP runs is
    uvicorn, the framework and the threadpool hand-off."""
    from agent.collector.app import parse_document
    from agent.collector.db import make_engine, migrate
    from agent.collector.ingest import ingest

    engine = make_engine(url)
    migrate(engine)
    bodies = _bodies(size, 99, count + 1, f"phases-{size}")
    ingest(engine, parse_document(bodies.pop()))  # connection and statements warm
    t = time.process_time()
    docs = [parse_document(b) for b in bodies]
    parse = time.process_time() - t
    t = time.process_time()
    for d in docs:
        ingest(engine, d)
    store = time.process_time() - t
    engine.dispose()
    return {"parse": 1000 * parse / count, "store": 1000 * store / count}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--only", choices=("sqlite", "postgres"), help="one database only")
    ap.add_argument("--sizes", default=",".join(SIZES), help="small,large")
    ap.add_argument("--no-phases", action="store_true", help="skip the in-process parse/store CPU split")
    args = ap.parse_args()

    from collector_support import Collector, new_postgres_db

    pg_url = pg_dir = None
    if args.only != "sqlite":
        out = subprocess.run(["bash", str(ROOT / "scripts/postgres.sh"), "start"], capture_output=True,
                             text=True, check=True, timeout=120)
        pg_url, pg_dir = out.stdout.strip().splitlines()[:2]
    pg_pid = _postgres_pid(pg_dir)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    quiet = ("--log-level", "warning")
    configs = {}
    if args.only != "postgres":
        configs["sqlite, 1 worker"] = Collector(f"sqlite:///{tmp / 'c.db'}", tmp / "sqlite.log", extra_args=quiet)
    if pg_url:
        configs["postgres, 1 worker"] = Collector(new_postgres_db(pg_url), tmp / "pg1.log", extra_args=quiet)
        configs[f"postgres, {args.workers} workers"] = Collector(
            new_postgres_db(pg_url), tmp / "pgN.log", extra_args=(*quiet, "--workers", str(args.workers)))
    rates: dict[tuple[str, str], list[Rate]] = {}
    sizes = args.sizes.split(",")
    try:
        for c in configs.values():
            c.start(timeout=120)
        for r in range(args.rounds):
            for size in sizes:
                for name, c in configs.items():  # interleaved: every configuration once per round
                    x = measure(c, size, args.seconds, r, pg_pid if "postgres" in name else None)
                    rates.setdefault((name, size), []).append(x)
                    print(f"round {r + 1} {size:5} {name:20} {x.docs:6.0f} docs/s {x.results:7.0f} results/s  "
                          f"CPU ms/doc: server {x.server_ms:5.2f} db {x.db_ms:5.2f} pushers {x.pushers_ms:5.2f}"
                          f"  load {os.getloadavg()[0]:.1f}", flush=True)
        split: dict[tuple[str, str], dict[str, float]] = {}
        if not args.no_phases:
            for c in configs.values():
                c.stop()
            dbs = {"sqlite": f"sqlite:///{tmp / 'phases.db'}"} if args.only != "postgres" else {}
            if pg_url:
                dbs["postgres"] = new_postgres_db(pg_url)
            for db, url in dbs.items():
                for size in sizes:
                    split[(db, size)] = phases(url, size, {"small": 400, "large": 40}[size])
    finally:
        for c in configs.values():
            c.stop()
        if pg_dir:
            subprocess.run(["bash", str(ROOT / "scripts/postgres.sh"), "stop", pg_dir], timeout=60)
    load = os.getloadavg()
    print(f"\n{PUSHERS} concurrent pushers, {args.seconds:.0f} s windows, median of {args.rounds} interleaved "
          f"rounds, {os.cpu_count()} cores, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"{'configuration':22} {'size':6} {'docs/s':>7} {'results/s':>10}   CPU ms per document: "
          "server   db  pushers")
    cores = os.cpu_count() or 1
    for (name, size), xs in rates.items():
        med = [statistics.median(getattr(x, f) for x in xs) for f in Rate._fields]
        ceiling = 1000 * cores / (med[2] + med[3] + med[4])
        print(f"{name:22} {size:6} {med[0]:7.0f} {med[1]:10.0f}   {'':21}{med[2]:6.2f} {med[3]:5.2f} {med[4]:7.2f}"
              f"   CPU-bound ceiling {ceiling:5.0f} docs/s")
    print(f"(ceiling: {cores} cores x 1000 ms / the CPU ms of one document in all three — what the "
          "machine allows with nothing else running)")
    if split:
        print("\nserver CPU ms per document by step, in-process (no HTTP):")
        for (db, size), ms in split.items():
            print(f"  {db:8} {size:6} parse + validate {ms['parse']:6.2f}   store {ms['store']:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
