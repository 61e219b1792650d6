"""Fleet-scale report benchmark: 1,000 nodes x 31 models x 4 backends x 3 batch
sizes (372,000 results) in a SQLite collector database; prints the time to
generate/ingest the database and to build and render the report (HTML with 31
embedded figures, Markdown, CSV), then the same with one tenth of the fleet for
the ratio.

    .venv/bin/python benchmarks/bench_fleet_report.py [--nodes 1000] [--db sqlite:///...] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.collector.db import make_engine, migrate  # noqa: E402
from agent.collector.ingest import ingest_many  # noqa: E402
from agent.fleet.data import build_report  # noqa: E402
from agent.fleet.render import write_report  # noqa: E402
from agent.fleet.synthetic import BACKEND_SPEEDUP, MODELS, fleet  # noqa: E402


def generate(url: str, nodes: int) -> tuple[float, int]:
    engine = make_engine(url)
    migrate(engine)
    t = time.perf_counter()
    batch, count = [], 0
    for doc in fleet(nodes, models=tuple(MODELS), formats=tuple(BACKEND_SPEEDUP), batch_sizes=(1, 8, 32)):
        batch.append(doc)
        count += len(doc.results)
        if len(batch) == 50:
            ingest_many(engine, batch)
            batch = []
    if batch:
        ingest_many(engine, batch)
    engine.dispose()
    return time.perf_counter() - t, count


def cpu_seconds() -> float:
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def render(url: str, out: Path) -> tuple[float, float, int]:
    engine = make_engine(url)
    t = time.perf_counter()
    report = build_report(engine, p99_budget_ms=10.0)
    t_query = time.perf_counter() - t
    write_report(report, out, ["html", "md", "csv"])
    engine.dispose()
    return t_query, time.perf_counter() - t, len(report.rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--keep", type=Path, help="keep the database and report here")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench-fleet-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"{len(MODELS)} models x {len(BACKEND_SPEEDUP)} backends x 3 batch sizes per node")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (wall times grow with load; "
          "CPU seconds include the figure workers)")
    print(f"{'nodes':>6} {'results':>9} {'generate+ingest s':>18} {'query s':>8} {'render total s':>15} {'render CPU s':>13}")
    try:
        timings = {}
        for n in (max(1, args.nodes // 10), args.nodes):
            db = work / f"fleet-{n}.db"
            db.unlink(missing_ok=True)
            url = f"sqlite:///{db}"
            gen, count = generate(url, n)
            cpu0 = cpu_seconds()
            q, total, rows = render(url, work / f"report-{n}")
            cpu = cpu_seconds() - cpu0
            assert rows == count, (rows, count)
            timings[n] = total
            size = (work / f"report-{n}" / "report.html").stat().st_size / 1e6
            print(f"{n:>6} {count:>9} {gen:>18.1f} {q:>8.1f} {total:>15.1f} {cpu:>13.1f}   (report.html {size:.1f} MB)")
        small, big = timings
        print(f"render time ratio {big}/{small} nodes: {timings[big] / timings[small]:.1f}x "
              f"for {big // small}x the data")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
