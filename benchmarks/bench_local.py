"""`make bench-local`: speedup of the best engine over eager PyTorch on this CPU.

Builds (incrementally) TorchScript + ONNX engines of resnet18, resnet50,
mobilenet_v3_small and squeezenet1_1 with max batch 8, measures eager,
TorchScript and ONNX Runtime side by side in one in-process run at batch 1
and 8, prints the full table, then one line per model/batch: the best
engine's throughput over eager's. Writes the result document to
out/bench-local/result.json."""

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
    ap.add_argument("--max-windows", type=int, default=6)
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

    t = Table(title="best engine vs eager (throughput ratio, same batch, same run)",
              title_justify="left")
    for c in ("model", "batch", "eager inf/s", "best engine", "best inf/s", "speedup", "stable"):
        t.add_column(c, justify="left" if c in ("model", "best engine") else "right")
    for m in models:
        for b in batches:
            rows = [r for r in doc.results if r.model == m and r.batch_size == b]
            eager = next(r for r in rows if r.format == "eager")
            best = max((r for r in rows if r.format != "eager"), key=lambda r: r.throughput_ips)
            t.add_row(m, str(b), f"{eager.throughput_ips:.1f}", best.format,
                      f"{best.throughput_ips:.1f}", f"{best.speedup_vs_eager:.2f}x",
                      "yes" if eager.stable and best.stable else "no")
    from rich.console import Console

    (console if console.is_terminal else Console(width=160)).print(t)
    print(f"result document: {args.out / 'result.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
