"""`agent collector` sub-commands."""

from __future__ import annotations

from typing import Annotated

import typer

from agent.collector import READ_TOKEN_ENV
from agent.errors import AgentError

app = typer.Typer(no_args_is_help=True, help="The fleet collector service (controller side).")

DEFAULT_PORT = 8080  # one default: Makefile COLLECTOR_URL, Terraform collector_port, fleet.env.example
DB_PASSWORD_ENV = "INFERFLEET_DB_PASSWORD"


@app.command("serve")
def serve(
    db: Annotated[str | None, typer.Option(envvar="INFERFLEET_COLLECTOR_DB", help="Database URL: sqlite:///PATH (default: STATE_DIR/collector.db) or postgresql://USER@HOST/DB — keep the password out of it (see --db-password-file).")] = None,
    db_password_file: Annotated[str | None, typer.Option("--db-password-file", help=f"File holding the PostgreSQL password (else ${DB_PASSWORD_ENV}, else libpq's PGPASSWORD/PGPASSFILE).")] = None,
    host: Annotated[str, typer.Option(help="Address to bind (loopback unless told otherwise).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = DEFAULT_PORT,
    token_env: Annotated[str | None, typer.Option("--token-env", help="Environment variable holding the write token (default: agent config, INFERFLEET_COLLECTOR_TOKEN).")] = None,
    read_token_env: Annotated[str, typer.Option("--read-token-env", help="Environment variable holding an optional read-only token (reads also accept the write token).")] = READ_TOKEN_ENV,
    max_body: Annotated[int, typer.Option("--max-body-bytes", help="Largest accepted result document.")] = 4 * 1024 * 1024,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes (PostgreSQL: one per core; SQLite: 1 is best, writes are serialised).")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the collector HTTP API (OpenAPI at /docs) after migrating the database."""
    import os

    from agent.collector.db import (
        default_db_url,
        has_password,
        make_engine,
        migrate,
        redact,
        with_password,
    )
    from agent.config import load_config
    from agent.ui import console_err

    config = load_config()
    env = token_env or config.collector_token_env
    token = os.environ.get(env, "")
    if not token.strip():
        raise AgentError(f"no collector write token: set the environment variable {env} "
                         "(or name another one with --token-env)")
    read_token = os.environ.get(read_token_env, "").strip() or None
    if not (0 < port < 65536):
        raise AgentError(f"--port must be 1..65535, got {port}")
    if max_body < 1024:
        raise AgentError("--max-body-bytes must be at least 1024")
    if not 1 <= workers <= 64:
        raise AgentError(f"--workers must be 1..64, got {workers}")
    url = db or default_db_url(config.state_dir)
    if db is None:
        config.state_dir.mkdir(parents=True, exist_ok=True)
    url = with_password(url, db_password_file, os.environ.get(DB_PASSWORD_ENV))
    if db and has_password(db):
        console_err.print("warning: the database password is on the command line, where the process "
                          f"list shows it: use --db-password-file or ${DB_PASSWORD_ENV}", highlight=False)
    engine = make_engine(url)
    migrate(engine)

    import uvicorn

    from agent.collector.app import create_app

    reads = f"write token or ${read_token_env}" if read_token else "write token"
    console_err.print(f"collector: database {redact(url)}, listening on http://{host}:{port} "
                      f"with {workers} worker(s) (writes: token from ${env}; reads: {reads})", highlight=False)
    if workers == 1:
        target = create_app(engine, token.strip(), max_body_bytes=max_body, read_token=read_token)
        extra: dict = {}
    else:  # worker processes build their own app (and engine) from inherited settings
        import json
        import tempfile

        from agent.collector.app import WORKER_DB_ENV, WORKER_SETTINGS_ENV
        from agent.collector.metrics import MULTIPROC_ENV

        engine.dispose()
        # /metrics sums the workers' values from here (prometheus-client multiprocess mode)
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="inferfleet-collector-metrics-")
        os.environ[WORKER_DB_ENV] = url
        os.environ[WORKER_SETTINGS_ENV] = json.dumps({
            "token_env": env, "read_token_env": read_token_env, "max_body": max_body})
        target, extra = "agent.collector.app:app_from_env", {"factory": True, "workers": workers}
    try:
        uvicorn.run(target, host=host, port=port, log_level=log_level, access_log=True,
                    timeout_graceful_shutdown=5, **extra)
    except OSError as e:
        raise AgentError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    finally:
        if workers > 1:
            import shutil

            shutil.rmtree(os.environ.pop(MULTIPROC_ENV), ignore_errors=True)
