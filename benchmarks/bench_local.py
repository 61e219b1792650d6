"""`make bench-local`: speedup of the best engine over eager PyTorch on this CPU.

Builds (incrementally) TorchScript + ONNX engines of resnet18, resnet50,
mobilenet_v3_small and squeezenet1_1 with max batch 8, then:

1. the regular in-process bench (eager, TorchScript, ONNX Runtime; batch 1
   and 8; percentiles; result document in out/bench-local/result.json);
2. the headline figure, measured *interleaved* so that a noisy shared machine
   hits every format alike: for each model and batch, ``--rounds`` rounds of
   one timed window per format (eager, TorchScript, ONNX in turn); each round
   gives a throughput ratio engine/eager; the median over rounds is the
   speedup, and the best engine is the format with the highest median."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.table import Table

from agent.bench.inprocess import run_inprocess
from agent.bench.options import BenchOptions
from agent.bench.table import print_results
from agent.build import BuildOptions, failures_error, print_summary, run_build
from agent.config import load_config
from agent.fsutil import atomic_write_text
from agent.ui import console

MODELS = ["resnet18", "resnet50", "mobilenet_v3_small", "squeezenet1_1"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("out/bench-local"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--duration", type=float, default=1.0, help="seconds per window")
    ap.add_argument("--max-windows", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per model/batch")
    args = ap.parse_args()
    models = args.models.split(",")
    batches = [int(b) for b in args.batch_sizes.split(",")]

    engines = args.out / "engines"
    outcomes = run_build(BuildOptions(models=models, out=engines, max_batch=max(8, *batches)))
    print_summary(outcomes)
    if (err := failures_error(outcomes)) is not None:
        print(f"error: {err}", file=sys.stderr)
        return 1
    doc = run_inprocess(BenchOptions(models=models, formats=["eager", "torchscript", "onnx"],
                                     batch_sizes=batches, engines_dir=engines, warmup=3,
                                     window_seconds=args.duration, max_windows=args.max_windows),
                        load_config())
    print_results(doc)
    atomic_write_text(args.out / "result.json", doc.model_dump_json(indent=2) + "\n")

    speedups = interleaved_speedups(models, batches, engines, args.duration, args.rounds)
    t = Table(title=f"best engine vs eager: median throughput ratio over {args.rounds} interleaved "
                    "rounds (same process, same inputs)", title_justify="left")
    for c in ("model", "batch", "eager inf/s", "torchscript", "onnx", "best engine", "speedup"):
        t.add_column(c, justify="left" if c in ("model", "best engine") else "right")
    for (m, b), (eager_ips, ratios) in speedups.items():
        best = max(ratios, key=ratios.get)
        t.add_row(m, str(b), f"{eager_ips:.1f}", f"{ratios['torchscript']:.2f}x",
                  f"{ratios['onnx']:.2f}x", best, f"[bold]{ratios[best]:.2f}x[/]")
    from rich.console import Console

    (console if console.is_terminal else Console(width=160)).print(t)
    print(f"result document: {args.out / 'result.json'}")
    return 0


def interleaved_speedups(models, batches, engines: Path, window_s: float, rounds: int):
    """{(model, batch): (eager inf/s median, {format: median ratio vs eager})}."""
    import statistics
    import time

    from agent.manifest import load_manifest
    from agent.runtimes import eager_runner, load_runner
    from agent.verify import random_batch

    manifest = load_manifest(engines, missing_ok=False)
    out = {}
    for m in models:
        runners = {"eager": eager_runner(m, device="cpu")}
        for f in ("torchscript", "onnx"):
            runners[f] = load_runner(manifest.engines[f"{m}_{f}"], engines)
        for b in batches:
            x = random_batch(b, runners["eager"].input_shape)
            prepared = {f: r.prepare(x) for f, r in runners.items()}
            for f, r in runners.items():  # warm-up
                for _ in range(2):
                    r.infer(prepared[f])
            ips: dict[str, list[float]] = {f: [] for f in runners}
            for _ in range(rounds):
                for f, r in runners.items():
                    n, start = 0, time.perf_counter()
                    while n == 0 or time.perf_counter() - start < window_s:
                        r.infer(prepared[f])
                        n += 1
                    ips[f].append(n * b / (time.perf_counter() - start))
            ratios = {f: statistics.median(a / e for a, e in zip(ips[f], ips["eager"], strict=True))
                      for f in runners if f != "eager"}
            out[(m, b)] = (statistics.median(ips["eager"]), ratios)
            print(f"{m} batch {b}: " + ", ".join(f"{f} {v:.2f}x" for f, v in ratios.items()),
                  file=sys.stderr)
        del runners
    return out


if __name__ == "__main__":
    sys.exit(main())
