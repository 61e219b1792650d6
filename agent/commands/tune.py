"""``agent tune``: the best serving configuration of each model under a p99 budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agent import defaults
from agent.errors import AgentError
from agent.ui import parse_csv, parse_ints


def _delays(value: str) -> tuple[int | None, ...]:
    out: list[int | None] = []
    for x in parse_csv(value):
        if x.lower() == "off":
            out.append(None)
            continue
        try:
            n = int(x)
        except ValueError:
            raise AgentError(f"--queue-delays must be 'off' or microseconds (>= 0), got {x!r}") from None
        if n < 0:
            raise AgentError(f"--queue-delays must be >= 0 microseconds, got {n}")
        out.append(n)
    if not out:
        raise AgentError("--queue-delays is empty")
    return tuple(dict.fromkeys(out))


def tune(
    models: Annotated[str, typer.Option(help="Comma-separated model names (default: every served engine).")] = "",
    formats: Annotated[str, typer.Option(help="Engine formats to tune (e.g. onnx).")] = "",
    p99_budget_ms: Annotated[float, typer.Option("--p99-budget-ms", help="p99 latency budget per request (ms).")] = 0.0,
    objective: Annotated[str, typer.Option(help="throughput (inferences/s) or cost (USD per million inferences).")] = "throughput",
    search: Annotated[str, typer.Option(help="quick (hill-climbing) or brute (every configuration).")] = "quick",
    url: Annotated[str, typer.Option(help="Triton URL (host:port), run with --model-control-mode=explicit.")] = "127.0.0.1:8000",
    protocol: Annotated[str, typer.Option(help="http or grpc.")] = "http",
    engines: Annotated[Path, typer.Option("--engines", help="Build directory with manifest.json.")] = Path("engines"),
    repo: Annotated[Path | None, typer.Option("--repo", help="Triton repository to write the winner to (default <engines>/triton-repo).")] = None,
    no_write: Annotated[bool, typer.Option("--no-write", help="Measure and report only; leave the repository as it is.")] = False,
    instances: Annotated[str, typer.Option(help="Instance counts to try.")] = "1,2",
    max_batch: Annotated[str, typer.Option("--max-batch", help="max_batch_size values to try (at most the engine's).")] = "1,4,8",
    queue_delays: Annotated[str, typer.Option("--queue-delays", help="Dynamic batching max_queue_delay_microseconds to try; 'off' = no dynamic batching.")] = "off,0,500,2000",
    preferred: Annotated[str, typer.Option(help=f"Preferred batch sizes to try: none, max, ladder ({','.join(map(str, defaults.PREFERRED_BATCH_SIZES))}).")] = "none",
    concurrency: Annotated[str, typer.Option(help="Client concurrency sweep per configuration.")] = "1,2,4,8",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Each request's batch.")] = 1,
    warmup: Annotated[int, typer.Option(help="Warm-up requests per point (times the concurrency).")] = 3,
    duration: Annotated[float, typer.Option(help="Seconds per measurement window.")] = 1.0,
    stability: Annotated[float, typer.Option(help="Windows are stable when throughput is within this percent.")] = 10.0,
    max_windows: Annotated[int, typer.Option(help="Windows per point at most.")] = 6,
    json_out: Annotated[Path | None, typer.Option("--json-file", help="Write the result document here.")] = None,
    push: Annotated[bool, typer.Option("--push", help="Push the results to the collector after the run.")] = False,
    collector: Annotated[str | None, typer.Option(help="Collector URL (default: agent config).")] = None,
    token_env: Annotated[str | None, typer.Option("--token-env", help="Environment variable holding the collector token.")] = None,
) -> None:
    """Search max batch size, dynamic batching and instance count per model under a p99 budget;
    write the winner to the repository; every point is a result (spooled, pushed)."""
    from agent.bench.options import BenchOptions
    from agent.config import load_config
    from agent.fsutil import atomic_write_text
    from agent.triton.repo import default_repo
    from agent.tune.search import PREFERRED, Grid

    if not p99_budget_ms > 0:
        raise AgentError("--p99-budget-ms must be > 0")
    if objective not in ("throughput", "cost"):
        raise AgentError(f"unknown --objective {objective!r}: use throughput or cost")
    if search not in ("quick", "brute"):
        raise AgentError(f"unknown --search {search!r}: use quick or brute")
    if protocol not in ("http", "grpc"):
        raise AgentError(f"unknown --protocol {protocol!r}: use http or grpc")
    if duration <= 0 or warmup < 0 or max_windows < 1 or stability <= 0 or batch_size < 1:
        raise AgentError("--duration, --stability must be > 0, --warmup >= 0, --max-windows and --batch-size >= 1")
    prefs = tuple(dict.fromkeys(parse_csv(preferred)))
    bad = [p for p in prefs if p not in PREFERRED]
    if bad or not prefs:
        raise AgentError(f"unknown --preferred {','.join(bad) or preferred!r}: use {', '.join(PREFERRED)}")
    grid = Grid(instances=tuple(sorted(set(parse_ints(instances, "--instances")))) or (1,),
                max_batch_size=tuple(sorted(set(parse_ints(max_batch, "--max-batch")))) or (1,),
                queue_delay_us=_delays(queue_delays), preferred=prefs,
                concurrency=tuple(sorted(set(parse_ints(concurrency, "--concurrency")))) or (1,))
    repo_dir = None if no_write else (repo or default_repo(engines))
    if repo_dir is not None and not repo_dir.is_dir():
        raise AgentError(f"--repo {repo_dir} does not exist (write it with `agent repo`, or pass --no-write)")
    if json_out is not None and json_out.parent and not json_out.parent.exists():
        raise AgentError(f"directory of {json_out} does not exist")
    config = load_config()
    bench = BenchOptions(models=parse_csv(models), formats=parse_csv(formats), batch_sizes=[batch_size],
                         engines_dir=engines, warmup=warmup, window_seconds=duration, stability_pct=stability,
                         max_windows=max_windows, url=url, protocol=protocol)
    from agent.tune.triton import TuneOptions

    opts = TuneOptions(bench=bench, grid=grid, p99_budget_ms=p99_budget_ms, objective=objective, search=search,
                       batch_size=batch_size, repo=repo_dir)
    doc, outcomes = _run(opts, config)
    _print(outcomes, opts)
    if json_out is not None:
        atomic_write_text(json_out, doc.model_dump_json(indent=2) + "\n")
    from agent.collector.push import push_spool, spool_document

    spool_document(doc, config)
    if push:
        push_spool(config, collector_url=collector, token_env=token_env)


def _run(opts, config):
    from agent.tune.triton import run_tune
    from agent.ui import console_err

    with console_err.status("tuning ...") as status:
        def on_point(p) -> None:
            line = (f"{p.extra.triton_model}: {p.config.label()}, concurrency {p.concurrency}: "
                    f"{p.throughput_ips:.1f} inf/s, p99 {p.p99_ms:.1f} ms")
            status.update(line)
            console_err.print(f"  {line}")

        return run_tune(opts, config, on_point)


def _print(outcomes, opts) -> None:
    from agent.ui import console

    for mo in outcomes:
        c, d = mo.outcome.chosen, mo.default_best
        if c is None:
            console.print(f"{mo.name}: no configuration met p99 <= {opts.p99_budget_ms:g} ms "
                          f"({len(mo.outcome.points)} points measured); the repository is unchanged")
            continue
        ratio = f" = {c.throughput_ips / d.throughput_ips:.2f}x the default" if d else " (the default met no point)"
        console.print(f"{mo.name}: {mo.outcome.search} search chose {c.config.label()}: "
                      f"{c.throughput_ips:.1f} inferences/s at p99 {c.p99_ms:.1f} ms (concurrency {c.concurrency})"
                      f"{ratio}; {len(mo.outcome.points)} points"
                      + (f"; written to {mo.written}" if mo.written else ""))
