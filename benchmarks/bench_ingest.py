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
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
    from agent.fleet.synthetic import MODELS, make_document, make_node

    if (size, node) not in _TEMPLATES:
        kw = {k: v for k, v in SIZES[size].items() if v is not None}
        if kw["models"] == "all":
            kw["models"] = tuple(MODELS)
        _TEMPLATES[(size, node)] = make_document(make_node(node), doc_id="ID-PLACEHOLDER", **kw) \
            .model_dump_json().encode()
    t = _TEMPLATES[(size, node)]
    return [t.replace(b"ID-PLACEHOLDER", f"{tag}-{node}-{k}".encode(), 1) for k in range(count)]


def _pusher(url: str, token: str, bodies: list[bytes], start_at: float, seconds: float, out) -> None:  # noqa: ANN001
    import httpx

    sent = 0
    with httpx.Client(headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                      timeout=30) as c:
        while time.time() < start_at:
            time.sleep(0.001)
        end = start_at + seconds
        for body in bodies:
            if time.time() >= end:
                break
            r = c.post(url + "/v1/results", content=body)
            assert r.status_code == 201, r.text[:200]
            sent += 1
        out.put((sent, time.time() - start_at))


def measure(collector, size: str, seconds: float, round_no: int) -> tuple[float, float]:  # noqa: ANN001
    from collector_support import TOKEN

    per = {"small": 2500, "large": 400}[size]
    tag = f"{size}-{round_no}-{collector.port}"
    bodies = [_bodies(size, n, per, tag) for n in range(PUSHERS)]
    results = len(__import__("json").loads(bodies[0][0])["results"])
    q: mp.Queue = mp.Queue()
    start_at = time.time() + 1.0
    procs = [mp.Process(target=_pusher, args=(collector.url, TOKEN, b, start_at, seconds, q)) for b in bodies]
    for p in procs:
        p.start()
    got = [q.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    docs = sum(n for n, _ in got)
    wall = max(t for _, t in got)
    return docs / wall, docs * results / wall


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()

    from collector_support import Collector, new_postgres_db

    out = subprocess.run(["bash", str(ROOT / "scripts/postgres.sh"), "start"], capture_output=True, text=True,
                         check=True, timeout=120)
    pg_url, pg_dir = out.stdout.strip().splitlines()[:2]
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    configs = {
        "sqlite, 1 worker": Collector(f"sqlite:///{tmp / 'c.db'}", tmp / "sqlite.log"),
        "postgres, 1 worker": Collector(new_postgres_db(pg_url), tmp / "pg1.log"),
        f"postgres, {args.workers} workers": Collector(new_postgres_db(pg_url), tmp / "pgN.log",
                                                       extra_args=("--workers", str(args.workers))),
    }
    rates: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        for c in configs.values():
            c.start(timeout=120)
        for r in range(args.rounds):
            for size in SIZES:
                for name, c in configs.items():  # interleaved: every configuration once per round
                    rates.setdefault((name, size), []).append(measure(c, size, args.seconds, r))
                    print(f"round {r + 1} {size:5} {name:22} {rates[(name, size)][-1][0]:7.0f} docs/s",
                          flush=True)
    finally:
        for c in configs.values():
            c.stop()
        subprocess.run(["bash", str(ROOT / "scripts/postgres.sh"), "stop", pg_dir], timeout=60)
    load = os.getloadavg()
    print(f"\n{PUSHERS} concurrent pushers, {args.seconds:.0f} s windows, median of {args.rounds} interleaved "
          f"rounds, {os.cpu_count()} cores, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"{'configuration':24} {'size':6} {'docs/s':>8} {'results/s':>10}")
    for (name, size), xs in rates.items():
        print(f"{name:24} {size:6} {statistics.median(d for d, _ in xs):8.0f} "
              f"{statistics.median(r for _, r in xs):10.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
