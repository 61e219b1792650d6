"""``agent bench``: measure engines in-process or through Triton."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agent.errors import AgentError
from agent.ui import parse_csv, parse_ints

DEFAULT_ENGINES = Path("engines")


def bench(
    models: Annotated[str, typer.Option(help="Comma-separated model names (default: every engine in --engines).")] = "",
    formats: Annotated[str, typer.Option(help="eager,torchscript,onnx,tensorrt (in-process) — default: eager + every built format.")] = "",
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", help="Comma-separated batch sizes.")] = "1,8",
    precision: Annotated[str, typer.Option(help="fp32 or fp16 engines to measure.")] = "fp32",
    engines: Annotated[Path, typer.Option("--engines", "--out", help="Build directory with manifest.json.")] = DEFAULT_ENGINES,
    target: Annotated[str, typer.Option(help="inprocess or triton.")] = "inprocess",
    url: Annotated[str, typer.Option(help="Triton URL (host:port) for --target triton.")] = "127.0.0.1:8000",
    protocol: Annotated[str, typer.Option(help="http or grpc for --target triton.")] = "http",
    concurrency: Annotated[str, typer.Option(help="Concurrency sweep for --target triton.")] = "1,2,4",
    warmup: Annotated[int, typer.Option(help="Warm-up requests before measuring.")] = 5,
    duration: Annotated[float, typer.Option(help="Seconds per measurement window.")] = 1.0,
    iterations: Annotated[int | None, typer.Option(help="Fixed number of requests instead of timed windows.")] = None,
    stability: Annotated[float, typer.Option(help="Windows are stable when throughput is within this percent.")] = 10.0,
    max_windows: Annotated[int, typer.Option(help="Stop after this many windows even if not stable.")] = 8,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result document here.")] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Write perf_analyzer-compatible CSV here.")] = None,
    push: Annotated[bool, typer.Option("--push", help="Push the result to the collector after the run.")] = False,
    collector: Annotated[str | None, typer.Option(help="Collector URL (default: agent config).")] = None,
    token_env: Annotated[str | None, typer.Option("--token-env", help="Environment variable holding the collector token.")] = None,
    rounds: Annotated[int | None, typer.Option(help="In-process: exactly this many interleaved rounds (one window per format each); default: until stable, at most --max-windows.")] = None,
) -> None:
    """Measure latency percentiles and throughput; print a table, write JSON, spool for the collector."""
    from agent.bench.options import BenchOptions
    from agent.bench.table import print_results
    from agent.config import load_config
    from agent.fsutil import atomic_write_text

    if target not in ("inprocess", "triton"):
        raise AgentError(f"unknown --target {target!r}: use inprocess or triton")
    if protocol not in ("http", "grpc"):
        raise AgentError(f"unknown --protocol {protocol!r}: use http or grpc")
    if precision not in ("fp32", "fp16"):
        raise AgentError(f"unknown --precision {precision!r}: use fp32 or fp16")
    if duration <= 0 or warmup < 0 or max_windows < 1 or stability <= 0:
        raise AgentError("--duration and --stability must be > 0, --warmup >= 0, --max-windows >= 1")
    if iterations is not None and iterations < 1:
        raise AgentError("--iterations must be >= 1")
    config = load_config()
    opts = BenchOptions(
        models=parse_csv(models),
        formats=parse_csv(formats),
        batch_sizes=parse_ints(batch_sizes, "--batch-sizes") or [1],
        precision=precision,
        engines_dir=engines,
        warmup=warmup,
        window_seconds=duration,
        iterations=iterations,
        stability_pct=stability,
        max_windows=max_windows,
        url=url,
        protocol=protocol,
        concurrency=parse_ints(concurrency, "--concurrency") or [1],
        rounds=rounds,
    )
    for out in (json_out, csv_out):
        if out is not None and out.parent and not out.parent.exists():
            raise AgentError(f"directory of {out} does not exist")

    if target == "inprocess":
        from agent.bench.inprocess import run_inprocess

        doc = run_inprocess(opts, config)
    else:
        from agent.bench.served import run_served

        doc = run_served(opts, config)

    print_results(doc)
    if json_out is not None:
        atomic_write_text(json_out, doc.model_dump_json(indent=2) + "\n")
    if csv_out is not None:
        from agent.bench.csvout import perf_analyzer_csv

        atomic_write_text(csv_out, perf_analyzer_csv(doc))

    from agent.push import push_spool, spool_document

    spool_document(doc, config)
    if push:
        push_spool(config, collector_url=collector, token_env=token_env)
