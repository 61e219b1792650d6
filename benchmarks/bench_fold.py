"""What keeping ``latest_results`` costs: documents stored one at a time with
``ingest`` (as the collector stores them: each run only queued), then the queue
folded with ``fold_pending`` (as the idle collector or the report folds it).
Prints both times, their ratio and the load average.

    .venv/bin/python benchmarks/bench_fold.py [--nodes 100] [--db URL]   # default: a temporary SQLite file
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from agent.collector.db import make_engine, migrate, redact
    from agent.collector.ingest import ingest
    from agent.collector.latest import fold_pending
    from testing.synthetic_fleet import fleet

    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=100, help="documents (one per node, 420 results each)")
    ap.add_argument("--db", help="an empty collector database URL (default: a temporary SQLite file)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fold-") as tmp:
        url = args.db or f"sqlite:///{tmp}/fold.db"
        engine = make_engine(url)
        migrate(engine)
        docs = list(fleet(args.nodes))
        results = sum(len(d.results) for d in docs)
        t = time.perf_counter()
        for d in docs:
            ingest(engine, d)
        stored = time.perf_counter() - t
        t = time.perf_counter()
        runs = fold_pending(engine)
        folded = time.perf_counter() - t
        engine.dispose()
    print(f"{redact(url)}: {len(docs)} documents, {results:,} results — ingest {stored:.2f} s "
          f"({len(docs) / stored:.0f} docs/s), fold {runs} runs {folded:.2f} s ({results / folded:,.0f} results/s) "
          f"= {folded / stored:.2f}x the ingest time; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
