"""``agent bench``: measure engines in-process or through Triton."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agent.errors import AgentError
from agent.ui import deprecated_alias, parse_csv, parse_ints

DEFAULT_ENGINES = Path("engines")


def bench(
    models: Annotated[str, typer.Option(help="Comma-separated model names (default: every engine in --engines).")] = "",
    formats: Annotated[str, typer.Option(help="eager,torchscript,onnx,tensorrt (in-process) — default: eager + every built format.")] = "",
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", help="Comma-separated batch sizes.")] = "1,8",
    precision: Annotated[str, typer.Option(help="fp32 or fp16 engines to measure.")] = "fp32",
    engines: Annotated[Path, typer.Option("--engines", help="Build directory with manifest.json.")] = DEFAULT_ENGINES,
    target: Annotated[str, typer.Option(help="inprocess or triton.")] = "inprocess",
    url: Annotated[str, typer.Option(help="Triton URL (host:port) for --target triton.")] = "127.0.0.1:8000",
    protocol: Annotated[str, typer.Option(help="http or grpc for --target triton.")] = "http",
    concurrency: Annotated[str, typer.Option(help="Concurrency sweep for --target triton.")] = "1,2,4",
    input_kind: Annotated[str, typer.Option("--input", help="tensors (random preprocessed tensors) or images (encoded images: decoding and preprocessing timed too; --target triton uses each model's <model>_classifier ensemble).")] = "tensors",
    images: Annotated[list[Path] | None, typer.Option("--images", help="Image file for --input images (repeatable; default: a synthetic 640x480 JPEG).")] = None,
    metrics_url: Annotated[str | None, typer.Option("--metrics-url", help="Triton's metrics endpoint host:port, scraped during every window (default: the server `agent serve` started, else the --url host on port 8002).")] = None,
    warmup: Annotated[int, typer.Option(help="Warm-up requests before measuring.")] = 5,
    duration: Annotated[float, typer.Option(help="Seconds per measurement window.")] = 1.0,
    iterations: Annotated[int | None, typer.Option(help="Fixed number of requests instead of timed windows.")] = None,
    stability: Annotated[float, typer.Option(help="Windows are stable when throughput is within this percent.")] = 10.0,
    max_windows: Annotated[int, typer.Option(help="Stop after this many windows even if not stable.")] = 8,
    json_out: Annotated[Path | None, typer.Option("--json-file", help="Write the result document here.")] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv-file", help="Write perf_analyzer-compatible CSV here.")] = None,
    verbose_csv: Annotated[bool, typer.Option("--verbose-csv", help="--csv-file adds perf_analyzer's verbose columns (avg latency, request/response, response wait).")] = False,
    push: Annotated[bool, typer.Option("--push", help="Push the result to the collector after the run.")] = False,
    collector: Annotated[str | None, typer.Option(help="Collector URL (default: agent config).")] = None,
    token_env: Annotated[str | None, typer.Option("--token-env", help="Environment variable holding the collector token.")] = None,
    rounds: Annotated[int | None, typer.Option(help="In-process: exactly this many interleaved rounds (one window per format each); default: until stable, at most --max-windows.")] = None,
    scenario: Annotated[str | None, typer.Option(help="MLPerf scenario run by LoadGen: single-stream, multi-stream, offline or server.")] = None,
    target_latency_ms: Annotated[float | None, typer.Option("--target-latency-ms", help="--scenario server: latency bound at p99 (LoadGen default 15).")] = None,
    min_duration: Annotated[float | None, typer.Option("--min-duration", help="--scenario: LoadGen's minimum run seconds (default 600).")] = None,
    min_queries: Annotated[int | None, typer.Option("--min-queries", help="--scenario: LoadGen's minimum query count (default: per scenario).")] = None,
    server_qps: Annotated[float | None, typer.Option("--server-qps", help="--scenario server: run at this target QPS instead of searching.")] = None,
    server_steps: Annotated[int, typer.Option("--server-steps", help="--scenario server: most LoadGen runs of the QPS search.")] = 8,
    log_dir: Annotated[Path | None, typer.Option("--log-dir", help="--scenario: where LoadGen's logs go (default <engines>/../bench-logs).")] = None,
    old_out: Annotated[Path | None, typer.Option("--out", hidden=True)] = None,
    old_json: Annotated[Path | None, typer.Option("--json", hidden=True)] = None,
    old_csv: Annotated[Path | None, typer.Option("--csv", hidden=True)] = None,
) -> None:
    """Measure latency percentiles and throughput; print a table, write JSON, spool for the collector."""
    from agent.bench.options import BenchOptions
    from agent.bench.table import print_results
    from agent.config import load_config
    from agent.fsutil import atomic_write_text

    engines = deprecated_alias(engines, old_out, "--out", "--engines")
    json_out = deprecated_alias(json_out, old_json, "--json FILE", "--json-file FILE")
    csv_out = deprecated_alias(csv_out, old_csv, "--csv FILE", "--csv-file FILE")
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
    if input_kind not in ("tensors", "images"):
        raise AgentError(f"unknown --input {input_kind!r}: use tensors or images")
    if images and input_kind != "images":
        raise AgentError("--images needs --input images")
    _check_scenario(scenario, target_latency_ms, min_duration, min_queries, server_qps, server_steps, log_dir,
                    csv_out)
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
        metrics_url=metrics_url,
        input="images" if input_kind == "images" else "tensor",
        images=list(images or []),
        rounds=rounds,
        scenario=scenario,
        target_latency_ms=target_latency_ms,
        min_duration_s=min_duration,
        min_queries=min_queries,
        server_qps=server_qps,
        server_steps=server_steps,
        log_dir=log_dir,
    )
    for out in (json_out, csv_out):
        if out is not None and out.parent and not out.parent.exists():
            raise AgentError(f"directory of {out} does not exist")

    if scenario is not None:
        from agent.bench.scenarios import (
            run_scenario_inprocess,
            run_scenario_served,
            scenario_table,
        )

        doc = (run_scenario_inprocess if target == "inprocess" else run_scenario_served)(opts, config)
    elif target == "inprocess":
        from agent.bench.inprocess import run_inprocess

        doc = run_inprocess(opts, config)
    else:
        from agent.bench.served import run_served

        doc = run_served(opts, config)

    print_results(doc)
    if scenario is not None:
        from rich.console import Console

        from agent.ui import console

        (console if console.is_terminal else Console(width=220)).print(scenario_table(doc))
    if json_out is not None:
        atomic_write_text(json_out, doc.model_dump_json(indent=2) + "\n")
    if csv_out is not None:
        from agent.bench.csvout import perf_analyzer_csv

        atomic_write_text(csv_out, perf_analyzer_csv(doc, verbose=verbose_csv))

    from agent.collector.push import push_spool, spool_document

    spool_document(doc, config)
    if push:
        push_spool(config, collector_url=collector, token_env=token_env)


SCENARIO_OPTIONS = ("--target-latency-ms", "--min-duration", "--min-queries", "--server-qps", "--log-dir")


def _check_scenario(scenario: str | None, target_latency_ms: float | None, min_duration: float | None,
                    min_queries: int | None, server_qps: float | None, server_steps: int,
                    log_dir: Path | None, csv_out: Path | None) -> None:
    """One-line errors for the LoadGen scenario options (before anything runs)."""
    scenarios = ("single-stream", "multi-stream", "offline", "server")
    given = [name for name, v in zip(SCENARIO_OPTIONS, (target_latency_ms, min_duration, min_queries, server_qps,
                                                        log_dir), strict=True) if v is not None]
    if scenario is None:
        if given:
            raise AgentError(f"{given[0]} needs --scenario ({', '.join(scenarios)})")
        return
    if scenario not in scenarios:
        raise AgentError(f"unknown --scenario {scenario!r}: use {', '.join(scenarios)}")
    if scenario != "server" and (target_latency_ms is not None or server_qps is not None):
        raise AgentError("--target-latency-ms and --server-qps apply to --scenario server only")
    if target_latency_ms is not None and not target_latency_ms > 0:
        raise AgentError("--target-latency-ms must be > 0")
    if min_duration is not None and not min_duration > 0:
        raise AgentError("--min-duration must be > 0 seconds")
    if min_queries is not None and min_queries < 1:
        raise AgentError("--min-queries must be >= 1")
    if server_qps is not None and not server_qps > 0:
        raise AgentError("--server-qps must be > 0")
    if server_steps < 1:
        raise AgentError("--server-steps must be >= 1")
    if csv_out is not None:
        raise AgentError("--csv-file (perf_analyzer's format) does not apply to --scenario results; use --json-file")
    if log_dir is not None and log_dir.exists() and not log_dir.is_dir():
        raise AgentError(f"--log-dir {log_dir} is not a directory")
