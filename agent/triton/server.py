"""Run a Triton server: the ``native`` runtime (a ``tritonserver`` binary as a
background process with pid and log files — by default the one bundled in the
``nvidia-pytriton`` wheel) or the ``container`` runtime (NGC
``tritonserver:<release>-py3`` with Docker or Podman and the NVIDIA runtime).

Both run Triton with ``--model-control-mode=explicit`` and
``--exit-on-error=true`` and load no model at startup: once the server is live,
each model of the repository is loaded through the API, so that a model that
fails to load is reported by name while the others keep serving (with
``--load-model`` at startup a single bad model would make ``--exit-on-error``
stop the whole server). Before each load, the model's files are checked against
the sha256 that ``agent repo`` recorded in its ``inferfleet.json``: a model that
does not match is refused by name and Triton never sees it (the native
platforms load engine files without any check of their own).

The bundled binary has three traps (see ENVIRONMENT.md), handled by
:func:`native_env` and :func:`prepare_backends`: the python backend stub needs
``LD_LIBRARY_PATH`` = the wheel's libs + the interpreter's libpython directory
(without it the server hangs, hence every start is under a timeout), it ignores
PYTHONPATH (so the venv's ``bin`` goes first on PATH), and numpy must be < 2."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agent.errors import AgentError
from agent.fsutil import atomic_write_text
from agent.triton.api import TritonAPI
from agent.triton.repo import MARKER, VERSION, repo_models

DEFAULT_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"  # Triton 2.51, as bundled in nvidia-pytriton 0.7
DEFAULT_CONTAINER_NAME = "inferfleet-triton"
CONTAINER_REPO = "/models"
PID_FILE = "tritonserver.pid"
STATE_FILE = "server.json"
LOG_FILE = "tritonserver.log"


# ------------------------------------------------------------------ settings
@dataclass
class ServerSettings:
    repo: Path
    runtime: str = "native"  # native | container
    bind: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    state_dir: Path = Path(".state/triton")
    tritonserver: Path | None = None  # native: binary (default: the bundled one)
    backend_dir: Path | None = None  # native: default <state_dir>/backends for the bundled binary
    image: str = DEFAULT_IMAGE  # container
    engine: str | None = None  # container: docker | podman (default: whichever is installed)
    container_name: str = DEFAULT_CONTAINER_NAME
    log_verbose: int = 0
    extra_args: list[str] = field(default_factory=list)

    @property
    def http_url(self) -> str:
        host = "127.0.0.1" if self.bind in ("0.0.0.0", "") else self.bind
        return f"http://{host}:{self.http_port}"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / PID_FILE

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    @property
    def log_file(self) -> Path:
        return self.state_dir / LOG_FILE


def triton_flags(s: ServerSettings, repo: str, bind: str | None) -> list[str]:
    """The tritonserver flags both runtimes share."""
    flags = [
        f"--model-repository={repo}",
        "--model-control-mode=explicit",
        "--exit-on-error=true",
        # health/ready answers for the server; every model's readiness is checked by name
        "--strict-readiness=false",
        f"--http-port={s.http_port}",
        f"--grpc-port={s.grpc_port}",
        f"--metrics-port={s.metrics_port}",
        "--allow-metrics=true",
        "--allow-cpu-metrics=true",  # nv_cpu_utilization / nv_cpu_memory_used_bytes beside nv_gpu_*
        "--metrics-config=summary_latencies=true",  # nv_inference_*_summary_us quantiles (p99 in Grafana)
        "--exit-timeout-secs=5",
        f"--log-verbose={s.log_verbose}",
    ]
    if bind is not None:
        flags += [f"--http-address={bind}", f"--grpc-address={bind}", f"--metrics-address={bind}"]
    return flags + list(s.extra_args)


# -------------------------------------------------------------------- native
@dataclass(frozen=True)
class Bundled:
    """The tritonserver shipped in the nvidia-pytriton wheel."""

    root: Path  # .../site-packages/pytriton/tritonserver
    libs: Path  # .../site-packages/nvidia_pytriton.libs

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"


def bundled() -> Bundled:
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise AgentError("nvidia-pytriton is not installed: no bundled tritonserver (pass --tritonserver PATH)")
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    b = Bundled(root=root, libs=root.parent.parent / "nvidia_pytriton.libs")
    if not b.binary.is_file():
        raise AgentError(f"bundled tritonserver not found at {b.binary}")
    return b


def prepare_backends(dest: Path, b: Bundled) -> Path:
    """``dest/python/`` with the python backend and the stub for this interpreter."""
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = b.root / "python_backend_stubs" / ver / "triton_python_backend_stub"
    if not stub.is_file():
        raise AgentError(f"the bundled Triton python backend has no stub for Python {ver}")
    py = dest / "python"
    py.mkdir(parents=True, exist_ok=True)
    src = b.root / "backends" / "python"
    for f in (src / "libtriton_python.so", src / "triton_python_backend_utils.py", stub):
        target = py / f.name
        if not target.exists() or target.stat().st_size != f.stat().st_size:
            tmp = py / f".tmp-{f.name}"
            shutil.copy2(f, tmp)
            os.replace(tmp, target)
    return dest


def native_env(b: Bundled | None, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    libdirs = [str(b.libs)] if b is not None else []
    libdirs.append(sysconfig.get_config_var("LIBDIR") or "")
    if env.get("LD_LIBRARY_PATH"):
        libdirs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(x for x in libdirs if x)
    # the stub runs `python` from PATH and ignores PYTHONPATH: this venv first
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")])
    return env


def native_command(s: ServerSettings) -> tuple[list[str], dict[str, str]]:
    """The tritonserver command line and environment of the native runtime."""
    b = None
    binary = s.tritonserver
    backend_dir = s.backend_dir
    if binary is None:
        b = bundled()
        binary = b.binary
        if backend_dir is None:
            backend_dir = prepare_backends(s.state_dir / "backends", b)
    cmd = [str(binary), *triton_flags(s, str(Path(s.repo).resolve()), s.bind)]
    if backend_dir is not None:
        cmd.append(f"--backend-directory={backend_dir}")
    return cmd, native_env(b)


# ----------------------------------------------------------------- container
def container_engine(preferred: str | None = None) -> str:
    for name in [preferred] if preferred else ["docker", "podman"]:
        if name not in ("docker", "podman"):
            raise AgentError(f"unknown container engine {name!r}: use docker or podman")
        if shutil.which(name):
            return name
    raise AgentError(
        f"{preferred or 'docker or podman'} not found: the container runtime needs a container engine "
        "with the NVIDIA runtime (use --runtime native on CPU machines)"
    )


def container_command(s: ServerSettings, engine: str, detach: bool = True) -> list[str]:
    """``docker|podman run`` of the NGC Triton image: all GPUs, repository read-only,
    ports published on ``s.bind`` only."""
    gpus = ["--gpus", "all"] if engine == "docker" else ["--device", "nvidia.com/gpu=all"]
    cmd = [engine, "run", "-d" if detach else "--rm", "--name", s.container_name, *gpus,
           "--shm-size=1g", "--ulimit", "memlock=-1", "--ulimit", "stack=67108864"]
    for port in (s.http_port, s.grpc_port, s.metrics_port):
        cmd += ["-p", f"{s.bind}:{port}:{port}"]
    cmd += ["-v", f"{Path(s.repo).resolve()}:{CONTAINER_REPO}:ro", s.image, "tritonserver"]
    # inside the container Triton listens on all its interfaces; the host side binds s.bind
    return cmd + triton_flags(s, CONTAINER_REPO, None)


# ------------------------------------------------------------------- helpers
def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def check_ports_free(s: ServerSettings) -> None:
    seen: dict[int, str] = {}
    for opt, port in (("--http-port", s.http_port), ("--grpc-port", s.grpc_port), ("--metrics-port", s.metrics_port)):
        if not 0 < port < 65536:
            raise AgentError(f"{opt} {port} is not a valid port")
        if port in seen:
            raise AgentError(f"{opt} and {seen[port]} are both {port}: every port must differ")
        seen[port] = opt
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((s.bind, port))
            except OSError as e:
                raise AgentError(f"port {port} ({opt}) on {s.bind} is already in use or not bindable: {e.strerror}") from None


def validate_repo(repo: Path) -> list[str]:
    repo = Path(repo)
    if not repo.is_dir():
        raise AgentError(f"model repository {repo} does not exist (write one with `agent repo`)")
    models = repo_models(repo)
    if not models:
        raise AgentError(f"{repo} is not a Triton model repository: no <model>/config.pbtxt inside")
    return models


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


def read_state(state_dir: Path) -> dict | None:
    """What ``agent serve start`` recorded in ``state_dir`` (ports, pid, ...), or None."""
    try:
        return json.loads((Path(state_dir) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def _read_state(s: ServerSettings) -> dict | None:
    return read_state(s.state_dir)


def serving_pid(state: dict) -> int | None:
    """The pid recorded in ``state`` while it is still that tritonserver (not a reused pid)."""
    p = _own_process(state)
    return p.pid if p is not None else None


def _own_process(state: dict):
    """The psutil.Process recorded in the state, if it is still that tritonserver."""
    import psutil

    try:
        p = psutil.Process(int(state["pid"]))
        if abs(p.create_time() - float(state["create_time"])) > 1.0:
            return None  # pid reused
        if "tritonserver" not in " ".join([p.name(), *p.cmdline()[:1]]):
            return None
        return p
    except (psutil.Error, KeyError, ValueError, TypeError):
        return None


# --------------------------------------------------------------- load models
LOADED_FILE = "loaded.json"


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    unloaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # model -> reason (first line)

    def error(self) -> AgentError | None:
        if not self.failed:
            return None
        names = "; ".join(f"{m}: {r}" for m, r in sorted(self.failed.items()))
        serving = len(self.loaded) + len(self.unchanged)
        return AgentError(f"{len(self.failed)} model(s) failed to load, {serving} other(s) serving — {names}",
                          code=3)


def short_reason(reason: str) -> str:
    text = " ".join(reason.split("\n\nAt:")[0].split())
    return text[:400]


def fingerprint(model_dir: Path) -> str | None:
    """What identifies a model directory's content: its config and marker (which holds
    the engine files' sha256), else every file's size and mtime."""
    import hashlib

    h = hashlib.sha256()
    files = [model_dir / "config.pbtxt", model_dir / "inferfleet.json"]
    if not files[1].is_file():
        files = sorted(p for p in model_dir.rglob("*") if p.is_file())
    try:
        for f in files:
            if f.name in ("config.pbtxt", "inferfleet.json"):
                h.update(f.read_bytes())
            else:
                st = f.stat()
                h.update(f"{f.relative_to(model_dir)}:{st.st_size}:{st.st_mtime_ns}".encode())
    except OSError:
        return None
    return h.hexdigest()


def check_model_files(model_dir: Path) -> str | None:
    """Check a model directory written by ``agent repo`` against the sha256 of every
    file that its ``inferfleet.json`` records; None when all match (or when the
    directory has no such marker: not written by inferfleet, nothing recorded to
    check), else the problem, naming the file.

    Every backend goes through this before Triton is asked to load the model:
    native platforms (onnxruntime_onnx, pytorch_libtorch, tensorrt_plan) load the
    file themselves and would serve a corrupted or replaced engine silently."""
    from agent.manifest import check_file_hashes

    marker_path = Path(model_dir) / MARKER
    if not marker_path.is_file():
        return None
    try:
        marker = json.loads(marker_path.read_text())
        files = marker.get("repo_files") or {  # markers written before repo_files existed
            f"{VERSION}/{Path(rel).name}": sha for rel, sha in marker["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"its {MARKER} cannot be read ({type(e).__name__}): rewrite it with `agent repo`"
    problem = check_file_hashes(files, model_dir)
    return None if problem is None else f"{problem} (sha256 recorded in {MARKER} by `agent repo`)"


def _read_loaded(state_dir: Path | None) -> dict[str, str]:
    if state_dir is None:
        return {}
    try:
        return json.loads((state_dir / LOADED_FILE).read_text())
    except (OSError, ValueError):
        return {}


def sync_models(api: TritonAPI, repo: Path | None, state_dir: Path | None,
                on_model: Callable[[str], None] | None = None, force: bool = False) -> LoadReport:
    """Make the server serve what the repository holds, without a restart.

    Loads models that are new, changed (fingerprint differs from when this
    agent loaded them) or not ready; unloads models this agent loaded that left
    the repository. Without a local ``repo`` (``--url`` only), every model of
    the server's repository index is (re)loaded. Before Triton is asked to
    load a model, its files are checked against the sha256 recorded by ``agent
    repo`` (:func:`check_model_files`): a model that does not match is refused
    (never loaded), and a model that fails either way is reported by name
    while the others keep serving."""
    report = LoadReport()
    before = _read_loaded(state_dir)
    index = {m["name"]: m for m in api.index()}
    after: dict[str, str] = {}
    for name in sorted(index):
        fp = fingerprint(Path(repo) / name) if repo is not None else None
        if not force and fp is not None and before.get(name) == fp and index[name].get("state") == "READY":
            report.unchanged.append(name)
            after[name] = fp
            continue
        problem = check_model_files(Path(repo) / name) if repo is not None else None
        if problem is not None:  # Triton is not asked to load it
            kept = "; the version loaded before keeps serving" if index[name].get("state") == "READY" else ""
            report.failed[name] = f"refused to load: {problem}{kept}"
            continue
        if on_model:
            on_model(name)
        reason = api.load(name)
        if reason is None and not api.model_ready(name):
            reason = "not ready after load"
        if reason is None:
            report.loaded.append(name)
            if fp is not None:
                after[name] = fp
        else:
            report.failed[name] = short_reason(reason)
    for name in sorted(set(before) - set(index)):
        if api.model_ready(name) and api.unload(name) is None:
            report.unloaded.append(name)
    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(state_dir / LOADED_FILE, json.dumps(after, indent=2, sort_keys=True) + "\n")
    return report


# ---------------------------------------------------------------- start/stop
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
    state = _read_state(s)
    if state and is_running(s, state):
        raise AgentError(f"a Triton server started from {s.state_dir} is already running "
                         f"({state.get('url')}); run `agent serve stop` first")
    check_ports_free(s)
    s.state_dir.mkdir(parents=True, exist_ok=True)
    api = TritonAPI(s.http_url)
    if s.runtime == "native":
        cmd, env = native_command(s)
        with open(s.log_file, "ab") as log:
            log.write(f"\n==== agent serve start {time.strftime('%Y-%m-%dT%H:%M:%S')}: {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True)
        import psutil

        state = {"runtime": "native", "pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time(),
                 "url": s.http_url, "repo": str(Path(s.repo).resolve()), "log": str(s.log_file),
                 "ports": {"http": s.http_port, "grpc": s.grpc_port, "metrics": s.metrics_port},
                 "bind": s.bind, "command": cmd}
        atomic_write_text(s.pid_file, f"{proc.pid}\n")
        atomic_write_text(s.state_file, json.dumps(state, indent=2) + "\n")

        def alive() -> bool:
            return proc.poll() is None

        def tail() -> str:
            return log_tail(s.log_file)
    else:
        engine = container_engine(s.engine)
        cmd = container_command(s, engine)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise AgentError(f"{engine} run failed: {(r.stderr or r.stdout).strip().splitlines()[-1:] }")
        state = {"runtime": "container", "engine": engine, "container": s.container_name, "url": s.http_url,
                 "repo": str(Path(s.repo).resolve()), "image": s.image, "bind": s.bind,
                 "ports": {"http": s.http_port, "grpc": s.grpc_port, "metrics": s.metrics_port}, "command": cmd}
        atomic_write_text(s.state_file, json.dumps(state, indent=2) + "\n")

        def alive() -> bool:
            q = subprocess.run([engine, "inspect", "-f", "{{.State.Running}}", s.container_name],
                               capture_output=True, text=True)
            return q.stdout.strip() == "true"

        def tail() -> str:
            q = subprocess.run([engine, "logs", "--tail", "15", s.container_name], capture_output=True, text=True)
            return (q.stdout + q.stderr).strip()

    try:
        _wait_live(api, alive, timeout, tail)
        (s.state_dir / LOADED_FILE).unlink(missing_ok=True)
        report = sync_models(api, s.repo, s.state_dir, on_model=on_model)
    except BaseException:
        api.close()
        stop(s, quiet=True)
        raise
    api.close()
    return Started(url=s.http_url, pid=state.get("pid"), report=report)


def is_running(s: ServerSettings, state: dict | None = None) -> bool:
    state = state if state is not None else _read_state(s)
    if not state:
        return False
    if state.get("runtime") == "container":
        q = subprocess.run([state["engine"], "inspect", "-f", "{{.State.Running}}", state["container"]],
                           capture_output=True, text=True)
        return q.stdout.strip() == "true"
    return _own_process(state) is not None


def stop(s: ServerSettings, timeout: float = 30.0, quiet: bool = False) -> bool:
    """Stop the server this state directory started; True when one was stopped.

    Native: only the recorded pid (checked to still be that tritonserver) and
    its process group (its python-backend stubs) are signalled."""
    import psutil

    state = _read_state(s)
    if not state:
        if quiet:
            return False
        raise AgentError(f"no Triton server was started from {s.state_dir} (no {STATE_FILE})")
    stopped = False
    if state.get("runtime") == "container":
        engine = state["engine"]
        r = subprocess.run([engine, "rm", "-f", "-t", str(int(timeout)), state["container"]],
                           capture_output=True, text=True)
        stopped = r.returncode == 0
    else:
        p = _own_process(state)
        if p is not None:
            children = p.children(recursive=True)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGTERM)
            gone, alive = psutil.wait_procs([p, *children], timeout=timeout)
            for q in alive:
                with contextlib.suppress(psutil.Error):
                    q.kill()
            psutil.wait_procs(alive, timeout=5)
            with contextlib.suppress(Exception):
                # reap it if this very process started it
                os.waitpid(p.pid, os.WNOHANG)
            stopped = True
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
    if s.runtime == "native":
        cmd, env = native_command(s)
    else:
        cmd, env = container_command(s, container_engine(s.engine), detach=False), dict(os.environ)
    cmd = [("--exit-on-error=false" if a == "--exit-on-error=true" else a) for a in cmd]
    cmd += [f"--load-model={m}" for m in models]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(cmd[0], cmd, env)


def state_summary(s: ServerSettings) -> dict | None:
    state = _read_state(s)
    if state is None:
        return None
    return {**state, "running": is_running(s, state)}


def settings_dict(s: ServerSettings) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(s).items()}
