"""agent tune on this CPU: resnet18 ONNX, tuned configuration vs the untuned default.

One Triton (the bundled CPU tritonserver, python backend) serves resnet18 ONNX (max
batch 16) as ``agent repo`` writes it by default (1 instance, max batch 16, dynamic
batching 100 µs, preferred 4/8/16). ``agent tune``'s search (quick by default) finds the
best configuration under the p99 budget, each at its best client concurrency within the
budget (batch-1 requests). Then the default and the tuned configuration are measured
interleaved — default, tuned, tuned, default, ... (ABBA: a linear load drift cancels) —
each loaded through the model control API and measured at its own best concurrency with
the served load generator; the ratio is the geometric mean of the per-round throughput
ratios with its 95 % interval (agent.bench.measure.paired_ratio), and every measurement's
p99 is checked against the budget. The load average is printed with every figure.

Goal: tuned ≥ 1.3× default within the same budget, or the figures show why the default
is already near the best here.

Usage: .venv/bin/python benchmarks/bench_tune.py [--out out/bench-tune] [--budget-ms 150]
       [--search quick] [--rounds 4] [--duration 1.5]"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # testing/ (not shipped)

from agent.ui import console  # noqa: E402

MODEL = "resnet18"
MAX_BATCH = 16


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("out/bench-tune"))
    ap.add_argument("--budget-ms", type=float, default=150.0, help="p99 budget per request")
    ap.add_argument("--search", default="quick", choices=("quick", "brute"))
    ap.add_argument("--instances", default="1,2")
    ap.add_argument("--max-batch", default="1,4,8,16")
    ap.add_argument("--queue-delays", default="off,0,2000,8000")
    ap.add_argument("--concurrency", default="1,2,4,8,16")
    ap.add_argument("--duration", type=float, default=1.5, help="seconds per window")
    ap.add_argument("--rounds", type=int, default=6, help="interleaved rounds (each: default, tuned or reversed)")
    args = ap.parse_args()

    from agent.bench.measure import paired_ratio
    from agent.bench.options import BenchOptions
    from agent.bench.served import _served_models, telemetry_sources
    from agent.build.pipeline import BuildOptions, failures_error, run_build
    from agent.commands.tune import _delays
    from agent.config import load_config
    from agent.triton.client import TritonAPI, connect
    from agent.triton.repo import RepoOptions, write_repository
    from agent.triton.server import ServerSettings, start, stop
    from testing.ports import free_port
    from agent.tune.search import Grid
    from agent.tune.triton import ModelTuner, TuneOptions, run_tune
    from agent.ui import parse_ints

    args.out.mkdir(parents=True, exist_ok=True)
    engines = args.out / "engines"
    err = failures_error(run_build(BuildOptions(models=[MODEL], out=engines, formats=["onnx"], max_batch=MAX_BATCH)))
    if err:
        raise err
    repo = engines / "triton-repo"
    (repo / f"{MODEL}_onnx" / "config.pbtxt").unlink(missing_ok=True)  # a tuned config of an earlier run: the default again
    write_repository(engines, repo, RepoOptions(backend="python", models=(MODEL,), formats=("onnx",)))
    s = ServerSettings(repo=repo, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                       state_dir=args.out / "triton-state")
    url = f"127.0.0.1:{s.http_port}"
    grid = Grid(instances=tuple(parse_ints(args.instances, "--instances")),
                max_batch_size=tuple(parse_ints(args.max_batch, "--max-batch")),
                queue_delay_us=_delays(args.queue_delays), concurrency=tuple(parse_ints(args.concurrency, "--concurrency")))
    bench = BenchOptions(models=[MODEL], formats=["onnx"], batch_sizes=[1], engines_dir=engines, url=url,
                         warmup=3, window_seconds=args.duration, max_windows=5, stability_pct=10.0,
                         metrics_url=f"127.0.0.1:{s.metrics_port}")
    opts = TuneOptions(bench=bench, grid=grid, p99_budget_ms=args.budget_ms, search=args.search, repo=repo)
    config = load_config()
    console.print(f"load average at start: {load()}")
    try:
        started = start(s, timeout=180)
        if started.report.failed:
            raise started.report.error()

        def on_point(p) -> None:
            console.print(f"  {p.config.label()}, concurrency {p.concurrency}: {p.throughput_ips:.1f} inf/s, "
                          f"p99 {p.p99_ms:.1f} ms  (load {load()})")

        doc, outcomes = run_tune(opts, config, on_point)
        mo = outcomes[0]
        (args.out / "tune.json").write_text(doc.model_dump_json(indent=2) + "\n")
        tuned, default = mo.outcome.chosen, mo.default_best
        console.print(f"search: {mo.outcome.search}, {len(mo.outcome.points)} points, budget p99 <= {args.budget_ms:g} ms")
        if tuned is None or default is None:
            def show(p) -> str:
                return "no point within the budget" if p is None else f"{p.config.label()}, {p.throughput_ips:.1f} inf/s"

            console.print(f"nothing to compare: tuned: {show(tuned)}; default: {show(default)} (load {load()})")
            return
        console.print(f"default: {default.config.label()} at concurrency {default.concurrency}: "
                      f"{default.throughput_ips:.1f} inf/s, p99 {default.p99_ms:.1f} ms")
        console.print(f"tuned:   {tuned.config.label()} at concurrency {tuned.concurrency}: "
                      f"{tuned.throughput_ips:.1f} inf/s, p99 {tuned.p99_ms:.1f} ms")
        # interleaved: default and tuned, each at its own best concurrency, ABBA order
        client = connect(url, "http")
        api = TritonAPI(url)
        served = _served_models(client, "http", bench)[0]
        tuner = ModelTuner(api, client, served, opts, telemetry_sources(bench, config))
        sides = {"default": default, "tuned": tuned}
        ips: dict[str, list[float]] = {"default": [], "tuned": []}
        p99: dict[str, list[float]] = {"default": [], "tuned": []}
        for r in range(args.rounds):
            for name in (("default", "tuned") if r % 2 == 0 else ("tuned", "default")):
                best = sides[name]
                p = tuner.measure(best.config, best.concurrency)
                ips[name].append(p.throughput_ips)
                p99[name].append(p.p99_ms)
                console.print(f"round {r + 1} {name:7s}: {p.throughput_ips:7.1f} inf/s, p99 {p.p99_ms:6.1f} ms "
                              f"(load {load()})")
        tuner.restore()
        api.close()
        client.close()
    finally:
        stop(s, quiet=True)
    ratio = paired_ratio(ips["tuned"], ips["default"])
    over = {n: sum(x > args.budget_ms for x in v) for n, v in p99.items()}
    summary = {"model": f"{MODEL}_onnx", "budget_ms": args.budget_ms, "search": mo.outcome.search,
               "points": len(mo.outcome.points), "default": default.config.label(),
               "default_concurrency": default.concurrency, "tuned": tuned.config.label(),
               "tuned_concurrency": tuned.concurrency, "ips": ips, "p99_ms": p99, "over_budget": over,
               "ratio": ratio.estimate, "ci": [ratio.low, ratio.high], "load_end": load()}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    ci = f" [95 % CI {ratio.low:.2f}–{ratio.high:.2f}]" if ratio.low is not None else ""
    console.print(f"tuned / default throughput within p99 <= {args.budget_ms:g} ms: {ratio.estimate:.2f}x{ci} over "
                  f"{ratio.pairs} interleaved rounds; measurements over budget: default {over['default']}, tuned "
                  f"{over['tuned']} (load {load()}); goal >= 1.3x")


if __name__ == "__main__":
    main()
