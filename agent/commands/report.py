"""`agent report` sub-commands."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="Send this node's results to the fleet collector.")


@app.command("push")
def push(
    collector: Annotated[str | None, typer.Option(help="Collector URL (default: agent config collector_url).")] = None,
    token_env: Annotated[str | None, typer.Option("--token-env", help="Environment variable holding the collector token (default: INFERFLEET_COLLECTOR_TOKEN).")] = None,
    retry_for: Annotated[float, typer.Option("--retry-for", help="Keep retrying (exponential backoff) for this many seconds.")] = 0.0,
    timeout: Annotated[float, typer.Option(help="Seconds per request.")] = 10.0,
    requeue: Annotated[bool, typer.Option("--requeue-dead-letter", help="First move the dead-lettered documents (SPOOL/dead-letter) back into the spool.")] = False,
) -> None:
    """Send every spooled result document; each leaves the spool only once the collector acknowledged it.

    A document the collector rejects for good (4xx, or a 5xx repeated while it is healthy)
    moves to SPOOL/dead-letter with its reason and the others go on; the exit status is 3
    when that happened, 2 when documents remain in the spool (collector unreachable)."""
    from agent.collector.push import collector_base, push_spool, requeue_dead_letters, spooled
    from agent.config import load_config
    from agent.errors import AgentError
    from agent.ui import console

    config = load_config()
    if timeout <= 0:
        raise AgentError("--timeout must be > 0")
    collector_base(collector or config.collector_url)  # a bad URL is refused even with an empty spool
    if requeue:
        console.print(f"requeued {requeue_dead_letters(config.spool_dir)} dead-lettered document(s)",
                      highlight=False)
    if not spooled(config.spool_dir):
        console.print(f"nothing to push: the spool {config.spool_dir} is empty", highlight=False)
        return
    s = push_spool(config, collector_url=collector, token_env=token_env, retry_for=retry_for,
                   timeout=timeout)
    console.print(f"pushed {s.sent} new, {s.duplicates} already stored; spool empty", highlight=False)
