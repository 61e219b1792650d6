"""Serving efficiency: resnet18 batch 1, in-process vs served by Triton, in one run.

1. builds (or reuses) the resnet18 ONNX engine and writes its Triton repository
   (python backend: the bundled CPU tritonserver);
2. measures the engine in-process (agent.bench.inprocess, the same runtime the
   served model uses);
3. starts Triton (native runtime, free loopback ports), measures it with
   agent.bench.served at concurrency 1, 2 and 4;
4. runs perf_analyzer (tritonclient 2.48.0's binary in .venv-pa, see
   ENVIRONMENT.md) against the same server when it is installed;
5. prints throughputs and the ratio served / in-process (serving efficiency),
   and stops the server.

Usage: .venv/bin/python benchmarks/bench_serving.py [--out out/bench-serving] [--duration 2]"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.table import Table

from agent.bench.options import BenchOptions
from agent.config import load_config
from agent.ui import console

ROOT = Path(__file__).resolve().parent.parent
MODEL = "resnet18"
ENGINE = f"{MODEL}_onnx"


def perf_analyzer(pa_venv: Path, port: int, concurrency: list[int], workdir: Path) -> dict[int, float] | str:
    """{concurrency: inferences/s} from perf_analyzer, or why it did not run."""
    binary = pa_venv / "bin" / "perf_analyzer"
    if not binary.is_file():
        return f"not installed ({binary}; `make bench-serving` installs it)"
    from agent.triton.server import bundled

    libs = bundled().libs
    linkdir = Path(tempfile.mkdtemp(prefix="pa-libs-", dir=workdir))
    for want, pattern in (("libb64.so.0d", "libb64-*.so.0d"), ("libcudart.so.12", "libcudart-*.so.12*")):
        found = sorted(libs.glob(pattern))
        if not found:
            return f"{pattern} not found in {libs}"
        (linkdir / want).symlink_to(found[0])
    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join([str(linkdir), os.environ.get("LD_LIBRARY_PATH", "")])}
    out = workdir / "perf_analyzer.csv"
    cmd = [str(binary), "-m", ENGINE, "-u", f"127.0.0.1:{port}", "-i", "http", "-b", "1",
           "--concurrency-range", f"{min(concurrency)}:{max(concurrency)}:1", "--measurement-interval", "3000",
           # on a shared 2-core machine perf_analyzer's default 10% / 10 trials often never settles
           "--stability-percentage", "25", "--max-trials", "8", "-f", str(out)]
    console.print("[dim]" + " ".join(cmd) + "[/]")
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    except subprocess.TimeoutExpired:
        return "timed out"
    if r.returncode != 0 or not out.is_file():
        return f"failed (rc {r.returncode}): {(r.stderr or r.stdout).strip().splitlines()[-1:]}"
    with open(out) as f:
        return {int(row["Concurrency"]): float(row["Inferences/Second"]) for row in csv.DictReader(f)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench-serving")
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per measurement window")
    ap.add_argument("--pa-venv", type=Path, default=ROOT / ".venv-pa")
    args = ap.parse_args()
    concurrency = [1, 2, 4]

    from agent.bench.inprocess import run_inprocess
    from agent.bench.served import run_served
    from agent.build import BuildOptions, failures_error, run_build
    from agent.triton.repo import RepoOptions, write_repository
    from agent.triton.server import ServerSettings, free_port, start, stop

    engines = args.out / "engines"
    err = failures_error(run_build(BuildOptions(models=[MODEL], out=engines, formats=["onnx"], max_batch=8)))
    if err:
        raise err
    repo = engines / "triton-repo"
    write_repository(engines, repo, RepoOptions(backend="python", models=(MODEL,), formats=("onnx",)))
    config = load_config()
    common = dict(models=[MODEL], formats=["onnx"], batch_sizes=[1], engines_dir=engines, warmup=10,
                  window_seconds=args.duration, stability_pct=10.0, max_windows=6)
    inproc = run_inprocess(BenchOptions(**common), config)
    inproc_ips = next(r.throughput_ips for r in inproc.results if r.format == "onnx")

    s = ServerSettings(repo=repo, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                       state_dir=args.out / "triton-state")
    try:
        started = start(s, timeout=180)
        if started.report.failed:
            raise started.report.error()
        served = run_served(BenchOptions(**common, url=f"127.0.0.1:{s.http_port}", protocol="http",
                                         concurrency=concurrency), config)
        pa = perf_analyzer(args.pa_venv, s.http_port, concurrency, args.out)
    finally:
        stop(s, quiet=True)

    t = Table(title=f"{MODEL} batch 1 on {inproc.node.cpu or '?'} ({inproc.node.cpu_count} CPUs): "
                    f"in-process ONNX Runtime vs Triton {served.node.triton_version} (python backend, HTTP)",
              title_justify="left")
    for col in ("measurement", "inf/s", "p50 ms", "p99 ms", "queue us", "vs in-process"):
        t.add_column(col, justify="left" if col == "measurement" else "right")
    r0 = next(r for r in inproc.results if r.format == "onnx")
    t.add_row("in-process engine", f"{inproc_ips:.1f}", f"{r0.latency_ms.p50:.2f}", f"{r0.latency_ms.p99:.2f}",
              "-", "1.00")
    for r in served.results:
        t.add_row(f"Triton concurrency {r.concurrency}", f"{r.throughput_ips:.1f}", f"{r.latency_ms.p50:.2f}",
                  f"{r.latency_ms.p99:.2f}", f"{r.server.queue_us:.0f}" if r.server else "-",
                  f"{r.throughput_ips / inproc_ips:.2f}")
    if isinstance(pa, dict):
        for c, ips in sorted(pa.items()):
            t.add_row(f"perf_analyzer concurrency {c}", f"{ips:.1f}", "-", "-", "-", f"{ips / inproc_ips:.2f}")
    console.print(t)
    if not isinstance(pa, dict):
        console.print(f"perf_analyzer: {pa}")
    best = max(r.throughput_ips for r in served.results)
    console.print(f"serving efficiency (best served / in-process throughput): {best / inproc_ips:.2f}")
    (args.out / "served.json").write_text(served.model_dump_json(indent=2))
    (args.out / "inprocess.json").write_text(inproc.model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
