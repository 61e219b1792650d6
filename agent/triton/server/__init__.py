"""Run a Triton server (``agent serve``) with one of two runtimes that implement
:class:`~agent.triton.server.runtime.Runtime`: ``process`` (a ``tritonserver`` binary,
by default the one bundled in ``nvidia-pytriton``; :mod:`.process`) or ``container``
(the NGC image with Docker or Podman and the NVIDIA runtime; :mod:`.container`).
:mod:`.settings` holds what the server runs with and what is recorded about it;
:mod:`.models` loads the repository's models into a running server.

Both run Triton with ``--model-control-mode=explicit`` and ``--exit-on-error=true``
and load no model at startup: once the server is live, each model of the repository
is loaded through the API, so that a model that fails to load is reported by name
while the others keep serving (with ``--load-model`` at startup a single bad model
would make ``--exit-on-error`` stop the whole server). Before each load, the model's
files are checked against the sha256 that ``agent repo`` recorded in its
``inferfleet.json``: a model that does not match is refused by name and Triton never
sees it."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.errors import AgentError
from agent.fsutil import atomic_write_text
from agent.triton.client import TritonAPI
from agent.triton.repo import repo_models  # noqa: F401  (re-exported: the repository's model names)
from agent.triton.server.container import CONTAINER_REPO, container_command, container_engine  # noqa: F401
from agent.triton.server.models import (  # noqa: F401
    LoadReport,
    check_model_files,
    fingerprint,
    short_reason,
    sync_models,
)
from agent.triton.server.process import (  # noqa: F401
    Bundled,
    bundled,
    prepare_backends,
    process_command,
    process_env,
)
from agent.triton.server.runtime import Runtime, runtime_for
from agent.triton.server.settings import (  # noqa: F401
    DEFAULT_CONTAINER_NAME,
    DEFAULT_IMAGE,
    LOADED_FILE,
    RUNTIME_ALIASES,
    STATE_FILE,
    TRITON_RELEASE,
    ServerSettings,
    check_ports_free,
    log_tail,
    read_state,
    runtime_name,
    serving_pid,
    settings_dict,
    triton_flags,
    validate_repo,
)


@dataclass
class Started:
    url: str
    pid: int | None
    report: LoadReport


def _wait_live(api: TritonAPI, alive: Callable[[], bool], timeout: float, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.live() and api.ready():
            return
        if not alive():
            raise AgentError(f"tritonserver exited during startup; last log lines:\n{log()}")
        time.sleep(0.25)
    raise AgentError(f"tritonserver was not ready after {timeout:.0f}s (stopped it); last log lines:\n{log()}")


def start(s: ServerSettings, timeout: float = 120.0, on_model: Callable[[str], None] | None = None) -> Started:
    """Start the server in the background, wait until it is ready, load every model.

    Raises AgentError (after stopping what it started) when the server does not
    come up; model load failures are in ``Started.report`` (the server keeps
    serving the others)."""
    validate_repo(s.repo)
    state = read_state(s.state_dir)
    if state and is_running(s, state):
        raise AgentError(f"a Triton server started from {s.state_dir} is already running "
                         f"({state.get('url')}); run `agent serve stop` first")
    check_ports_free(s)
    s.state_dir.mkdir(parents=True, exist_ok=True)
    runtime = runtime_for(s.runtime)
    state = {"runtime": runtime.name, "url": s.http_url, "repo": str(Path(s.repo).resolve()), "bind": s.bind,
             "ports": s.ports(), **runtime.launch(s)}
    atomic_write_text(s.state_file, json.dumps(state, indent=2) + "\n")
    api = TritonAPI(s.http_url)
    try:
        _wait_live(api, lambda: runtime.alive(state), timeout, lambda: runtime.log_tail(s, state))
        (s.state_dir / LOADED_FILE).unlink(missing_ok=True)
        report = sync_models(api, s.repo, s.state_dir, on_model=on_model)
    except BaseException:
        stop(s, quiet=True)
        raise
    finally:
        api.close()
    return Started(url=s.http_url, pid=state.get("pid"), report=report)


def is_running(s: ServerSettings, state: dict | None = None) -> bool:
    state = state if state is not None else read_state(s.state_dir)
    return bool(state) and runtime_for(state.get("runtime", "process")).alive(state)


def stop(s: ServerSettings, timeout: float = 30.0, quiet: bool = False) -> bool:
    """Stop the server this state directory started; True when one was stopped."""
    state = read_state(s.state_dir)
    if not state:
        if quiet:
            return False
        raise AgentError(f"no Triton server was started from {s.state_dir} (no {STATE_FILE})")
    stopped = runtime_for(state.get("runtime", "process")).stop(s, state, timeout)
    for f in (s.pid_file, s.state_file, s.state_dir / LOADED_FILE):
        f.unlink(missing_ok=True)
    if not stopped and not quiet:
        raise AgentError(f"the Triton server recorded in {s.state_file} was not running (state cleared)")
    return stopped


def exec_foreground(s: ServerSettings) -> None:
    """Replace this process with tritonserver (for a systemd unit): no pid file, no daemon.

    Models are loaded at startup with ``--load-model`` (only those whose files match
    the sha256 recorded by ``agent repo``); ``--exit-on-error=false`` here
    so that one model that fails to load does not take the node down (systemd would
    restart it in a loop) — the failure shows in ``agent serve status``."""
    models = []
    for m in validate_repo(s.repo):
        problem = check_model_files(Path(s.repo) / m)
        if problem is None:
            models.append(m)
        else:
            print(f"warning: model {m} refused to load: {problem}", file=sys.stderr)
    check_ports_free(s)
    s.state_dir.mkdir(parents=True, exist_ok=True)
    cmd, env = runtime_for(s.runtime).foreground_command(s)
    cmd = [("--exit-on-error=false" if a == "--exit-on-error=true" else a) for a in cmd]
    cmd += [f"--load-model={m}" for m in models]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(cmd[0], cmd, env)


def state_summary(s: ServerSettings) -> dict | None:
    state = read_state(s.state_dir)
    if state is None:
        return None
    return {**state, "running": is_running(s, state)}


__all__ = ["Runtime", "ServerSettings", "Started", "exec_foreground", "is_running", "start", "state_summary",
           "stop"]
