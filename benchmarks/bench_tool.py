"""`make bench-tool`: the speed of inferfleet itself (not of the models), side by side.

1. CLI start, cold processes: `agent --help`, `agent models --json` (median of N, interleaved).
2. `build-engines` of 3 models: first build with the long-lived worker (one torch import)
   vs one worker per model (the old way), interleaved A/B/A/B in fresh directories; then
   the no-op rebuild and its ratio to the first build.
3. The fleet report at scale (benchmarks/bench_fleet_report.py) and collector ingest with
   8 concurrent pushers (benchmarks/bench_ingest.py), unless skipped.

Every figure is printed with the load average at the time it was taken.

    .venv/bin/python benchmarks/bench_tool.py [--skip-fleet] [--skip-ingest] [--build-rounds 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AGENT = [sys.executable, "-m", "agent"]
MODELS = "squeezenet1_1,mobilenet_v3_small,resnet18"


def load() -> str:
    a, b, c = os.getloadavg()
    return f"load {a:.1f}/{b:.1f}/{c:.1f}"


def timed(cmd: list[str], env: dict | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def cli_start(reps: int) -> None:
    cmds = {"agent --help": AGENT + ["--help"], "agent models --json": AGENT + ["models", "--json"]}
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(reps):
        for name, cmd in cmds.items():  # interleaved
            times[name].append(timed(cmd))
    for name, xs in times.items():
        print(f"  {name:24} median {statistics.median(xs):5.2f} s  (min {min(xs):.2f}, max {max(xs):.2f}, "
              f"n={reps})  goal <= 1 s   [{load()}]")


def builds(rounds: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-tool-"))
    env_pool = {**os.environ, "INFERFLEET_BUILD_MODELS_PER_WORKER": "8"}
    env_old = {**os.environ, "INFERFLEET_BUILD_MODELS_PER_WORKER": "1"}
    first: dict[str, list[float]] = {"long-lived worker": [], "worker per model": []}
    try:
        for r in range(rounds):
            for name, env in (("long-lived worker", env_pool), ("worker per model", env_old)):
                out = tmp / f"{r}-{name.split()[0]}"
                first[name].append(timed(AGENT + ["build-engines", "--models", MODELS, "--out", str(out),
                                                  "--no-repo"], env))
                print(f"  round {r + 1}: first build, {name:18} {first[name][-1]:6.1f} s   [{load()}]", flush=True)
        out = tmp / "0-long-lived"
        noop = [timed(AGENT + ["build-engines", "--models", MODELS, "--out", str(out)]) for _ in range(3)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    pool, old = statistics.median(first["long-lived worker"]), statistics.median(first["worker per model"])
    print(f"  first build of {MODELS}: long-lived worker {pool:.1f} s vs worker per model {old:.1f} s "
          f"(ratio {pool / old:.2f})")
    print(f"  no-op rebuild (with the repository step): median {statistics.median(noop):.2f} s; "
          f"no-op / first build = {statistics.median(noop) / pool:.3f}  goal <= 0.1   [{load()}]")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=5, help="cold CLI starts per command")
    ap.add_argument("--build-rounds", type=int, default=2)
    ap.add_argument("--skip-fleet", action="store_true")
    ap.add_argument("--skip-ingest", action="store_true")
    args = ap.parse_args()
    print(f"inferfleet tool speed on {os.cpu_count()} cores, {load()}")
    print("\n1. CLI start (cold process)")
    cli_start(args.reps)
    print("\n2. build-engines")
    builds(args.build_rounds)
    if not args.skip_fleet:
        print("\n3. fleet report at scale", flush=True)
        subprocess.run([sys.executable, str(ROOT / "benchmarks/bench_fleet_report.py")], cwd=ROOT, check=True)
    if not args.skip_ingest:
        print("\n4. collector ingest", flush=True)
        subprocess.run([sys.executable, str(ROOT / "benchmarks/bench_ingest.py")], cwd=ROOT, check=True)
    print(f"\ndone [{load()}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
