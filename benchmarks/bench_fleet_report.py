"""Fleet-scale report benchmark: 1,000 nodes x 31 models x 4 backends x 3 batch
sizes (372,000 results) in a SQLite collector database, and one tenth of that.

Every node also runs the four MLPerf LoadGen scenarios for 3 models on every
backend (48,000 scenario results at 1,000 nodes; every 10th node has an INVALID
server run and every 25th an INVALID offline run, whose reasons the report
reads from those runs' documents), and records cv_pct and the speedup interval.

Prints, per fleet size, the time to build the report's numbers (``query``:
build_report — the SQL summaries, and the rows where they are written) and to write it
(``render``: HTML with 31 inline figures and the scenario tables, Markdown, and
every CSV — results.csv and scenarios.csv as ``agent fleet report`` decides by
default, i.e. up to 100,000 results, and also never (like for like: the same
files at both sizes), see ``--results-csv``; the CSV part also on its own),
their sum, and the ratio of the two sizes.
Each measurement runs in a fresh Python process (as ``agent fleet report``
does: imports, a cold start), and the sizes are interleaved (small, big,
small, big, ...) so that a change in the machine's load hits both alike; the
median of the repetitions is reported, with the load average before and after.

    .venv/bin/python benchmarks/bench_fleet_report.py [--nodes 1000] [--repeat 3] [--keep DIR]
        [--baseline GIT-REV]   # also time the report code of an older commit, interleaved (A/B)
        [--results-csv auto|always|never]  # results.csv + scenarios.csv: as the CLI decides
                               # (up to 100,000 results), always, or never (older code: always)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MEASURE = r"""
import inspect, json, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from agent.collector.db import make_engine
from agent.fleet.data import build_report
from agent.fleet.render import write_report

def cpu():
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

def main():
    engine = make_engine(sys.argv[2])
    # results.csv and scenarios.csv: as the CLI decides by default (None), always (True), never (False)
    rows = {"rows": json.loads(sys.argv[4])} if "rows" in inspect.signature(build_report).parameters else {}
    c0, t0 = cpu(), time.perf_counter()
    report = build_report(engine, p99_budget_ms=10.0, **rows)
    t1 = time.perf_counter()
    engine.dispose()  # as agent fleet report does: the report is written from memory
    write_report(report, Path(sys.argv[3]), ["html", "md"])
    t2 = time.perf_counter()
    # the same files as one call with all three formats (older code: results.csv always)
    opt = {"results_csv": json.loads(sys.argv[4])} if "results_csv" in inspect.signature(write_report).parameters else {}
    write_report(report, Path(sys.argv[3] + "-csv"), ["csv"], **opt)
    t3 = time.perf_counter()
    size = (Path(sys.argv[3]) / "report.html").stat().st_size
    results_csv = (Path(sys.argv[3] + "-csv") / "results.csv").exists()
    print(json.dumps({"query": t1 - t0, "render": t3 - t1, "csv": t3 - t2, "cpu": cpu() - c0,
                      "rows": len(report.rows),
                      "html_mb": size / 1e6, "results_csv": results_csv}))

if __name__ == "__main__":
    main()
"""


def generate(url: str, nodes: int) -> tuple[float, int]:
    from agent.collector.db import make_engine, migrate
    from agent.collector.ingest import ingest_many
    from testing.synthetic_fleet import BACKEND_SPEEDUP, MODELS, fleet

    engine = make_engine(url)
    migrate(engine)
    t = time.perf_counter()
    batch, count = [], 0
    for doc in fleet(nodes, models=tuple(MODELS), formats=tuple(BACKEND_SPEEDUP), batch_sizes=(1, 8, 32)):
        batch.append(doc)
        count += sum(r.scenario is None for r in doc.results)  # the sweeps; scenarios have their own table
        if len(batch) == 50:
            ingest_many(engine, batch)
            batch = []
    if batch:
        ingest_many(engine, batch)
    engine.dispose()
    return time.perf_counter() - t, count


CSV_MODES = {"auto": None, "always": True, "never": False}  # build_report(rows=...), write_report(results_csv=...)


def checkout(rev: str, work: Path) -> Path:
    """The agent package and templates of ``rev`` (read from git, nothing in the working tree changes)."""
    dest = work / f"rev-{rev.replace('/', '_')}"
    if not dest.exists():
        dest.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "agent", "templates"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def measure(code_root: Path, url: str, out: Path, results_csv: bool | None = None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(f"{out}-csv", ignore_errors=True)
    r = subprocess.run([sys.executable, "-c", MEASURE, str(code_root), url, str(out), json.dumps(results_csv)],
                       capture_output=True, text=True, cwd=code_root)
    if r.returncode != 0:
        raise SystemExit(f"report failed ({code_root}):\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    from testing.synthetic_fleet import BACKEND_SPEEDUP, MODELS

    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3, help="measurements per size (and code version)")
    ap.add_argument("--baseline", help="a git revision whose report code is timed too, interleaved")
    ap.add_argument("--keep", type=Path, help="keep the databases and reports here (and reuse the databases)")
    ap.add_argument("--results-csv", default="auto,never",
                    help="results.csv and scenarios.csv, comma-separated modes measured interleaved: auto (as "
                         "agent fleet report decides: up to 100,000 results, i.e. at 100 nodes but not at "
                         "1,000), always, never (like for like: the same files at both sizes)")
    args = ap.parse_args()
    modes = args.results_csv.split(",")
    if not set(modes) <= set(CSV_MODES):
        ap.error(f"--results-csv: modes are {', '.join(CSV_MODES)}")
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench-fleet-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = (max(1, args.nodes // 10), args.nodes)
    print(f"{len(MODELS)} models x {len(BACKEND_SPEEDUP)} backends x 3 batch sizes per node; "
          f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} (1 min) before")
    try:
        urls, counts = {}, {}
        for n in sizes:
            db = work / f"fleet-{n}.db"
            urls[n] = f"sqlite:///{db}"
            if args.keep and db.exists():
                print(f"{n:>6} nodes: reusing {db}")
                counts[n] = None
                continue
            db.unlink(missing_ok=True)
            gen, counts[n] = generate(urls[n], n)
            print(f"{n:>6} nodes: {counts[n]:,} results generated + ingested in {gen:.1f} s")
        versions = {"now": ROOT}
        if args.baseline:
            versions = {args.baseline: checkout(args.baseline, work), "now": ROOT}
        # older code has one behaviour (results.csv always): one mode for it
        cases = [(v, mode) for v in versions for mode in (modes if v == "now" else modes[:1])]
        runs: dict[tuple[str, str, int], list[dict]] = {(v, mode, n): [] for v, mode in cases for n in sizes}
        loads = []
        for i in range(args.repeat):  # A/B/A/B: sizes (and versions, modes) alternate within every round
            for v, mode in cases:
                for n in sizes:
                    loads.append(os.getloadavg()[0])
                    m = measure(versions[v], urls[n], work / f"report-{n}", CSV_MODES[mode])
                    if counts[n] is not None:
                        assert m["rows"] == counts[n], (m["rows"], counts[n])
                    runs[(v, mode, n)].append(m)
                    print(f"  round {i + 1} {v:>8} {mode:>6} {n:>5} nodes: query {m['query']:6.2f} s  "
                          f"render {m['render']:6.2f} s"
                          f" (CSV {m.get('csv', float('nan')):5.2f} s)  total {m['query'] + m['render']:6.2f} s"
                          f"  CPU {m['cpu']:6.2f} s  load {loads[-1]:.1f}"
                          f"{'' if m.get('results_csv', True) else '  (no results.csv)'}", flush=True)
        print(f"\nmedian of {args.repeat} (fresh process each; load average {min(loads):.1f}–{max(loads):.1f}, "
              f"{os.getloadavg()[0]:.1f} after)")
        print(f"{'code':>8} {'csv':>6} {'nodes':>6} {'results':>9} {'query s':>8} {'render s':>9} {'(CSV s)':>8} "
              f"{'total s':>8} {'CPU s':>7} {'report.html':>12}")
        for v, mode in cases:
            totals = {}
            for n in sizes:
                ms = runs[(v, mode, n)]
                q = statistics.median(m["query"] for m in ms)
                r = statistics.median(m["render"] for m in ms)
                totals[n] = statistics.median(m["query"] + m["render"] for m in ms)
                cpu = statistics.median(m["cpu"] for m in ms)
                csv_s = statistics.median(m.get("csv", float("nan")) for m in ms)
                print(f"{v:>8} {mode:>6} {n:>6} {ms[0]['rows']:>9,} {q:>8.2f} {r:>9.2f} {csv_s:>8.2f} {totals[n]:>8.2f} "
                      f"{cpu:>7.2f} {ms[0]['html_mb']:>9.2f} MB"
                      f"{'' if ms[0].get('results_csv', True) else '  (no results.csv)'}")
            small, big = sizes
            print(f"{v:>8} {mode:>6} total time ratio {big}/{small} nodes: {totals[big] / totals[small]:.2f}x "
                  f"for {big // small}x the data")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
