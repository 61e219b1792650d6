"""`agent collector` sub-commands."""

from __future__ import annotations

from typing import Annotated

import typer

from agent.errors import AgentError

app = typer.Typer(no_args_is_help=True, help="The fleet collector service (controller side).")


@app.command("serve")
def serve(
    db: Annotated[str | None, typer.Option(help="Database URL: sqlite:///PATH (default: STATE_DIR/collector.db) or postgresql://...")] = None,
    host: Annotated[str, typer.Option(help="Address to bind (loopback unless told otherwise).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8800,
    token_env: Annotated[str | None, typer.Option("--token-env", help="Environment variable holding the write token (default: agent config, INFERFLEET_COLLECTOR_TOKEN).")] = None,
    max_body: Annotated[int, typer.Option("--max-body-bytes", help="Largest accepted result document.")] = 4 * 1024 * 1024,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the collector HTTP API (OpenAPI at /docs) after migrating the database."""
    import os

    from agent.collector.db import default_db_url, make_engine, migrate, redact
    from agent.config import load_config
    from agent.ui import console_err

    config = load_config()
    env = token_env or config.collector_token_env
    token = os.environ.get(env, "")
    if not token.strip():
        raise AgentError(f"no collector write token: set the environment variable {env} "
                         "(or name another one with --token-env)")
    if not (0 < port < 65536):
        raise AgentError(f"--port must be 1..65535, got {port}")
    if max_body < 1024:
        raise AgentError("--max-body-bytes must be at least 1024")
    url = db or default_db_url(config.state_dir)
    if db is None:
        config.state_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url)
    migrate(engine)

    import uvicorn

    from agent.collector.app import create_app

    app_ = create_app(engine, token.strip(), max_body_bytes=max_body)
    console_err.print(f"collector: database {redact(url)}, listening on http://{host}:{port} "
                      f"(write token from ${env})", highlight=False)
    try:
        uvicorn.run(app_, host=host, port=port, log_level=log_level, access_log=True,
                    timeout_graceful_shutdown=5)
    except OSError as e:
        raise AgentError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
