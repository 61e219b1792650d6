"""`make bench-local`: speedup of each engine over eager PyTorch on this CPU.

Builds (incrementally) TorchScript + ONNX engines of resnet18, resnet50,
mobilenet_v3_small and squeezenet1_1 with max batch 8, then per model:

1. *interleaved* — the agent's own in-process bench (``agent bench --rounds``):
   ``--rounds`` rounds of one window per format (eager, TorchScript, ONNX in
   turn, reversed every other round); speedup = geometric mean of the per-round
   ratios engine/eager with its 95 % interval, so load drift cancels out.
   Percentiles, stability and memory: the full table; the result document goes
   to out/bench-local/result.json;
2. *separate*, for comparison — the same ratio measured the way the agent used
   to: each format's windows repeated until stable, one format after the other,
   ratio of their throughputs, so whatever the machine's load did between the
   two measurements lands in the ratio.

Every figure is printed with the 1-minute load average while it was measured;
a separate figure outside the interleaved interval is marked †."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from rich.table import Table

from agent.bench.inprocess import load_and_warm, release_memory, run_inprocess, window_runner
from agent.bench.measure import measure_until_stable
from agent.bench.options import BenchOptions
from agent.bench.table import print_results
from agent.build.manifest import engine_name, load_manifest
from agent.build.pipeline import BuildOptions, failures_error, print_summary, run_build
from agent.config import load_config
from agent.fsutil import atomic_write_text
from agent.ui import console

MODELS = ["resnet18", "resnet50", "mobilenet_v3_small", "squeezenet1_1"]
ENGINES = ("torchscript", "onnx")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("out/bench-local"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--duration", type=float, default=1.0, help="seconds per window")
    ap.add_argument("--max-windows", type=int, default=4, help="separate measurement: windows per format at most")
    ap.add_argument("--rounds", type=int, default=6, help="interleaved rounds per model and batch")
    args = ap.parse_args()
    models = args.models.split(",")
    batches = [int(b) for b in args.batch_sizes.split(",")]

    engines = args.out / "engines"
    outcomes = run_build(BuildOptions(models=models, out=engines, max_batch=max(8, *batches)))
    print_summary(outcomes)
    if (err := failures_error(outcomes)) is not None:
        print(f"error: {err}", file=sys.stderr)
        return 1
    opts = BenchOptions(formats=["eager", *ENGINES], batch_sizes=batches, engines_dir=engines, warmup=3,
                        window_seconds=args.duration, max_windows=args.max_windows, rounds=args.rounds)
    config = load_config()
    doc, rows = None, []
    for m in models:
        one = replace(opts, models=[m])
        load0 = os.getloadavg()[0]
        d = run_inprocess(one, config)
        load_inter = (load0, os.getloadavg()[0])
        sep, load_sep = separate_speedups(one)
        if doc is None:
            doc = d
        else:
            doc.results += d.results
        for b in batches:
            got = {r.format: r for r in d.results if r.batch_size == b}
            rows.append((m, b, got, sep[b], load_inter, load_sep))

    print_results(doc)
    atomic_write_text(args.out / "result.json", doc.model_dump_json(indent=2) + "\n")
    t = Table(title=f"engine vs eager on {doc.node.cpu} ({doc.node.cpu_count} CPUs): interleaved = geometric "
                    f"mean over {args.rounds} rounds [95 % interval]; separate = one format after the "
                    "other (the old way); load = 1-min load average during each",
              title_justify="left")
    for c in ("model", "batch", "eager inf/s", *(f"{f} {how}" for f in ENGINES for how in ("interleaved", "separate")),
              "load interleaved", "load separate"):
        t.add_column(c, justify="left" if c == "model" else "right")
    for m, b, got, sep, li, ls in rows:
        cells = []
        for f in ENGINES:
            r = got[f]
            cells.append(f"{r.speedup_vs_eager:.2f}x [{r.speedup_ci_low:.2f}–{r.speedup_ci_high:.2f}]")
            outside = not r.speedup_ci_low <= sep[f] <= r.speedup_ci_high
            cells.append(f"{sep[f]:.2f}x" + (" †" if outside else ""))
        t.add_row(m, str(b), f"{got['eager'].throughput_ips:.1f}", *cells,
                  f"{li[0]:.1f}–{li[1]:.1f}", f"{ls[0]:.1f}–{ls[1]:.1f}")
    from rich.console import Console

    (console if console.is_terminal else Console(width=200)).print(t)
    print(f"result document: {args.out / 'result.json'}")
    return 0


def separate_speedups(opts: BenchOptions) -> tuple[dict[int, dict[str, float]], tuple[float, float]]:
    """({batch: {engine: throughput / eager throughput}}, load average at start and end), each
    format loaded and measured until stable (all batch sizes) before the next one is loaded."""
    manifest = load_manifest(opts.engines_dir)
    (model,) = opts.models
    load0 = os.getloadavg()[0]
    ips: dict[str, dict[int, float]] = {}
    for f in opts.formats:
        rec = None if f == "eager" else manifest.engines[engine_name(model, f, opts.precision)]
        release_memory()
        runner, inputs = load_and_warm(model, rec, opts, "cpu")
        ips[f] = {b: measure_until_stable(window_runner(runner, inputs[b], opts), b, opts.stability_pct,
                                          opts.max_windows).throughput_ips
                  for b in opts.batch_sizes}
        del runner, inputs
    ratios = {b: {f: ips[f][b] / ips["eager"][b] for f in ENGINES} for b in opts.batch_sizes}
    print(f"{model} separate: " + ", ".join(f"batch {b} " + " ".join(f"{f} {v:.2f}x" for f, v in r.items())
                                            for b, r in ratios.items()), file=sys.stderr)
    return ratios, (load0, os.getloadavg()[0])


if __name__ == "__main__":
    sys.exit(main())
