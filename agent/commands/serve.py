"""``agent serve start|stop|status|reload``: run Triton on this node.

``--runtime process`` runs a tritonserver binary (default: the one bundled in
nvidia-pytriton, CPU + python backend) as a background process with pid and
log files under ``--state-dir``; ``--runtime container`` runs the NGC image
with Docker or Podman and all GPUs. ``--foreground`` execs the server instead
(for a systemd unit). Models are loaded explicitly through the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from agent.errors import AgentError

app = typer.Typer(no_args_is_help=True, help="Run Triton Inference Server on this node.")

DEFAULT_REPO = Path("engines/triton-repo")

RepoOpt = Annotated[Path, typer.Option("--repo", help="Triton model repository (agent repo writes it).")]
StateOpt = Annotated[Path | None, typer.Option("--state-dir", help="Pid, log and state files (default: <agent state dir>/triton).")]
UrlOpt = Annotated[str | None, typer.Option("--url", help="Triton HTTP endpoint host:port (default: the server started from --state-dir).")]


def _state_dir(state_dir: Path | None) -> Path:
    if state_dir is not None:
        return state_dir
    from agent.config import load_config

    return load_config().state_dir / "triton"


def _settings(repo: Path, state_dir: Path | None, **kw):
    from agent.triton.server import ServerSettings

    return ServerSettings(repo=repo, state_dir=_state_dir(state_dir), **kw)


@app.command("start")
def start(
    repo: RepoOpt = DEFAULT_REPO,
    runtime: Annotated[str, typer.Option(help="process (a tritonserver binary; default: the one bundled in nvidia-pytriton) or container (NGC image, GPU nodes).")] = "process",
    bind: Annotated[str, typer.Option(help="Address the HTTP, gRPC and metrics ports bind to.")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option("--http-port")] = 8000,
    grpc_port: Annotated[int, typer.Option("--grpc-port")] = 8001,
    metrics_port: Annotated[int, typer.Option("--metrics-port")] = 8002,
    state_dir: StateOpt = None,
    tritonserver: Annotated[Path | None, typer.Option(help="process: tritonserver binary (default: bundled in nvidia-pytriton).")] = None,
    backend_dir: Annotated[Path | None, typer.Option("--backend-directory", help="process: Triton backends directory.")] = None,
    image: Annotated[str | None, typer.Option(help="container: image (default: NGC tritonserver of the pinned release, agent.triton.server.DEFAULT_IMAGE).")] = None,
    engine: Annotated[str | None, typer.Option(help="container: docker or podman (default: whichever is installed).")] = None,
    container_name: Annotated[str, typer.Option("--container-name")] = "inferfleet-triton",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the server to be ready.")] = 120.0,
    foreground: Annotated[bool, typer.Option("--foreground", help="exec the server in the foreground (systemd): no pid file.")] = False,
) -> None:
    """Start Triton, wait until it and every model are ready."""
    from agent.triton.server import DEFAULT_IMAGE, RUNTIME_ALIASES, exec_foreground, runtime_name
    from agent.triton.server import start as start_server
    from agent.ui import console, console_err, deprecated_value

    runtime = runtime_name(deprecated_value(runtime, RUNTIME_ALIASES, "--runtime"))
    if timeout <= 0:
        raise AgentError("--timeout must be > 0")
    s = _settings(repo, state_dir, runtime=runtime, bind=bind, http_port=http_port, grpc_port=grpc_port,
                  metrics_port=metrics_port, tritonserver=tritonserver, backend_dir=backend_dir,
                  image=image or DEFAULT_IMAGE, engine=engine, container_name=container_name)
    if tritonserver is not None and not tritonserver.is_file():
        raise AgentError(f"--tritonserver {tritonserver} does not exist")
    if foreground:
        exec_foreground(s)  # does not return
    with console_err.status(f"starting Triton ({runtime}) on {s.http_url} ...") as status:
        started = start_server(s, timeout=timeout,
                               on_model=lambda m: status.update(f"loading model {m} ..."))
    r = started.report
    console.print(f"Triton serving on {started.url} (grpc :{grpc_port}, metrics :{metrics_port})"
                  + (f", pid {started.pid}" if started.pid else "")
                  + f"; {len(r.loaded)} model(s) ready: {', '.join(r.loaded) or 'none'}")
    err = r.error()
    if err is not None:
        raise AgentError(f"{err} (the server keeps running: `agent serve stop` stops it)", code=3)


@app.command("stop")
def stop(
    state_dir: StateOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds before the server is killed.")] = 30.0,
) -> None:
    """Stop the server started from --state-dir (only that process)."""
    from agent.triton.server import ServerSettings
    from agent.triton.server import stop as stop_server
    from agent.ui import console

    s = ServerSettings(repo=Path("."), state_dir=_state_dir(state_dir))
    stop_server(s, timeout=timeout)
    console.print("Triton stopped")


def _url(url: str | None, state_dir: Path | None) -> tuple[str, dict | None]:
    from agent.triton.server import ServerSettings, state_summary

    s = ServerSettings(repo=Path("."), state_dir=_state_dir(state_dir))
    state = state_summary(s)
    if url:
        return url, state if state and state.get("url", "").endswith(url.split("//")[-1]) else None
    if state is None:
        raise AgentError(f"no Triton server was started from {s.state_dir}; pass --url host:port")
    return state["url"], state


@app.command("status")
def status(
    url: UrlOpt = None,
    state_dir: StateOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Server health, each model's state and version."""
    from rich.table import Table

    from agent.triton.client import TritonAPI
    from agent.ui import console

    url, state = _url(url, state_dir)
    with TritonAPI(url) as api:
        live, ready = api.live(), api.ready()
        if not live:
            hint = f" (log: {state['log']})" if state and state.get("log") else ""
            raise AgentError(f"Triton at {api.url} is not reachable{hint}", code=4)
        meta = api.metadata()
        models = api.index()
    doc = {"url": url, "live": live, "ready": ready, "version": meta.get("version"),
           "pid": state.get("pid") if state else None, "runtime": state.get("runtime") if state else None,
           "models": [{"name": m["name"], "version": m.get("version"), "state": m.get("state", "UNLOADED"),
                       "reason": (m.get("reason") or "").split("\n")[0]} for m in models]}
    if json_out:
        print(json.dumps(doc, indent=2))
        return
    console.print(f"Triton {doc['version']} at {url}: live={live} ready={ready}"
                  + (f" pid={doc['pid']}" if doc["pid"] else ""))
    table = Table()
    for col in ("model", "version", "state", "reason"):
        table.add_column(col)
    for m in doc["models"]:
        color = "green" if m["state"] == "READY" else "red"
        table.add_row(m["name"], m["version"] or "", f"[{color}]{m['state']}[/]", m["reason"])
    console.print(table)


@app.command("reload")
def reload(
    url: UrlOpt = None,
    repo: Annotated[Path | None, typer.Option("--repo", help="The server's repository on this host (reloads only changed models).")] = None,
    state_dir: StateOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Reload every model, changed or not.")] = False,
) -> None:
    """Load new or changed models and unload removed ones, without a restart."""
    from agent.triton.client import TritonAPI
    from agent.triton.server import sync_models
    from agent.ui import console, console_err

    url, state = _url(url, state_dir)
    if repo is None and state is not None and state.get("repo"):
        repo = Path(state["repo"])
    if repo is not None and not repo.is_dir():
        raise AgentError(f"--repo {repo} does not exist")
    with TritonAPI(url) as api:
        if not api.live():
            raise AgentError(f"Triton at {api.url} is not reachable", code=4)
        with console_err.status("reloading ...") as st:
            r = sync_models(api, repo, _state_dir(state_dir), force=force,
                            on_model=lambda m: st.update(f"loading model {m} ..."))
    console.print(f"reloaded: {', '.join(r.loaded) or 'none'}; unchanged: {', '.join(r.unchanged) or 'none'}; "
                  f"unloaded: {', '.join(r.unloaded) or 'none'}")
    err = r.error()
    if err is not None:
        raise err
