"""`agent fleet` sub-commands."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from agent.errors import AgentError

app = typer.Typer(no_args_is_help=True, help="Fleet-wide views of the collected benchmark results.")


def parse_since(value: str | None) -> datetime | None:
    """ISO 8601 date/time (UTC unless an offset is given) or a relative age: 30m, 12h, 7d."""
    if not value:
        return None
    m = re.fullmatch(r"(\d+)([mhdw])", value.strip())
    if m:
        unit = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[m.group(2)]
        return datetime.now(UTC) - timedelta(**{unit: int(m.group(1))})
    try:
        t = datetime.fromisoformat(value.strip())
    except ValueError:
        raise AgentError(f"--since {value!r}: use an ISO date/time (2025-01-31, 2025-01-31T12:00) "
                         "or an age (30m, 12h, 7d, 2w)") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@app.command("report")
def report(
    db: Annotated[str | None, typer.Option(help="Collector database URL (default: STATE_DIR/collector.db).")] = None,
    collector: Annotated[str | None, typer.Option(help="Read from a running collector instead of a database.")] = None,
    token_env: Annotated[str | None, typer.Option("--token-env", help="Environment variable holding the collector's read token (default: INFERFLEET_COLLECTOR_READ_TOKEN, else the agent config's write-token variable, INFERFLEET_COLLECTOR_TOKEN).")] = None,
    out: Annotated[Path, typer.Option(help="Output directory (replaced as a whole).")] = Path("out/fleet-report"),
    formats: Annotated[str, typer.Option("--outputs", help="Comma-separated: html, md, csv.")] = "html,md,csv",
    since: Annotated[str | None, typer.Option(help="Only results since: ISO date/time or age (7d, 12h).")] = None,
    p99_budget: Annotated[float | None, typer.Option("--p99-budget", help="p99 latency budget (ms) for the best-configuration table.")] = None,
    threshold: Annotated[float, typer.Option(help="Flag throughput/p99 changes beyond this many percent.")] = 5.0,
    compare: Annotated[str | None, typer.Option(help="Compare two runs: BEFORE_ID,AFTER_ID (default: per node, newest stack vs the previous one).")] = None,
    max_cv: Annotated[float, typer.Option("--max-cv", help="Flag a result unstable when the coefficient of variation of its windows' throughputs (cv_pct, where recorded) exceeds this many percent.")] = 5.0,
    results_csv: Annotated[bool | None, typer.Option("--results-csv/--no-results-csv", help="Write results.csv, every newest result (default: when there are at most 100,000).")] = None,
    old_format: Annotated[str | None, typer.Option("--format", hidden=True)] = None,
) -> None:
    """Render the fleet report: self-contained HTML (plots embedded), Markdown and CSV."""
    import time

    from agent.ui import console, deprecated_alias, parse_csv

    formats = deprecated_alias(formats, old_format, "--format", "--outputs")
    fmts = parse_csv(formats)
    bad = [f for f in fmts if f not in ("html", "md", "csv")]
    if bad or not fmts:
        raise AgentError(f"--outputs {formats!r}: choose from html, md, csv")
    if db and collector:
        raise AgentError("give either --db or --collector, not both")
    if threshold <= 0:
        raise AgentError("--threshold must be > 0 (percent)")
    if max_cv <= 0:
        raise AgentError("--max-cv must be > 0 (percent)")
    if p99_budget is not None and p99_budget <= 0:
        raise AgentError("--p99-budget must be > 0 (ms)")
    pair = None
    if compare:
        pair = tuple(parse_csv(compare))
        if len(pair) != 2:
            raise AgentError("--compare needs two run ids: BEFORE_ID,AFTER_ID")
    start = parse_since(since)
    if out.exists() and not out.is_dir():
        raise AgentError(f"--out {out} exists and is not a directory")

    from agent.fleet.data import build_report
    from agent.fleet.render import write_report
    from agent.fleet.source import mirror_collector, open_database, read_token

    t0 = time.perf_counter()
    if collector:
        engine = mirror_collector(collector, read_token(token_env), start)
    else:
        if db is None:
            from agent.collector.db import default_db_url
            from agent.config import load_config

            db = default_db_url(load_config().state_dir)
        engine = open_database(db)
    try:
        data = build_report(engine, since=start, threshold_pct=threshold, p99_budget_ms=p99_budget,
                            compare=pair, max_cv_pct=max_cv, rows=results_csv)
    finally:
        engine.dispose()
    scenarios = sum(g["nodes"] for g in data.scenarios.summary) if data.scenarios else 0
    if not data.rows and not scenarios:
        raise AgentError("no results to report" + (f" since {start.isoformat()}" if start else ""))
    files = write_report(data, out, fmts, results_csv=results_csv)
    regressions = sum(c.flag == "regression" for c in data.comparisons)
    invalid = len(data.scenarios.invalid) if data.scenarios else 0
    console.print(f"fleet report: {len(data.nodes)} nodes, {len(data.models)} models, {len(data.rows)} "
                  f"configurations, {regressions} regression(s) flagged, {scenarios} scenario result(s) "
                  f"({invalid} INVALID), in {time.perf_counter() - t0:.1f}s", highlight=False)
    for f in files:
        console.print(f"  {f}", highlight=False)
