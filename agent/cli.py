"""``agent``: the inferfleet command line (Typer).

Each command lives in ``agent/commands/<name>.py`` and imports its heavy
dependencies (torch, onnxruntime, FastAPI...) only when it runs, so
``agent --help`` stays instant on every node."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from agent import __version__
from agent.commands import bench, build, classify, collector, fleet, infra, models, repo, report, schema, serve, tune
from agent.errors import AgentError
from agent.ui import console_err

app = typer.Typer(
    name="agent",
    help="inferfleet node agent: build verified inference engines, serve them with Triton, "
    "benchmark them and report to the fleet collector.\n\n"
    "Options mean one thing everywhere: --engines DIR is the engine build directory (written by "
    "build-engines, read by repo, bench, classify); --out DIR is where a command writes its output "
    "directory; --json prints JSON on stdout, --json-file / --csv-file write files; --formats are "
    "engine formats, --outputs a report's file types.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        print(__version__)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the agent version and exit.")] = False,
) -> None:
    """The inferfleet agent's global options."""

app.command("models")(models.models)
app.command("build-engines")(build.build_engines)
app.command("repo")(repo.repo)
app.command("bench")(bench.bench)
app.command("classify")(classify.classify)
app.command("schema")(schema.schema)
app.command("tune")(tune.tune)
app.add_typer(serve.app, name="serve")
app.add_typer(report.app, name="report")
app.add_typer(collector.app, name="collector")
app.add_typer(fleet.app, name="fleet")
app.add_typer(infra.app, name="infra")


@app.command("version")
def version() -> None:
    """Print the agent version."""
    print(__version__)


def main() -> None:
    try:
        app(standalone_mode=False)
    except AgentError as e:
        console_err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.code)
    except typer.Abort:
        console_err.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        console_err.print("interrupted")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.TyperException as e:  # usage errors: unknown option, missing argument...
        show = getattr(e, "show", None)
        if show is None:
            raise
        show()
        sys.exit(getattr(e, "exit_code", 2))

if __name__ == "__main__":
    main()
