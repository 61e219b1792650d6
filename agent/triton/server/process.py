"""The ``process`` runtime: a ``tritonserver`` binary as a background process with pid
and log files — by default the one bundled in the ``nvidia-pytriton`` wheel.

The bundled binary has three traps (see ENVIRONMENT.md), handled by
:func:`process_env` and :func:`prepare_backends`: the python backend stub needs
``LD_LIBRARY_PATH`` = the wheel's libs + the interpreter's libpython directory
(without it the server hangs, hence every start is under a timeout), it ignores
PYTHONPATH (so the venv's ``bin`` goes first on PATH), and numpy must be < 2."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from agent.errors import AgentError
from agent.fsutil import atomic_write_text
from agent.triton.server.runtime import Runtime
from agent.triton.server.settings import ServerSettings, log_tail, own_process, triton_flags


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


def process_env(b: Bundled | None, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    libdirs = [str(b.libs)] if b is not None else []
    libdirs.append(sysconfig.get_config_var("LIBDIR") or "")
    if env.get("LD_LIBRARY_PATH"):
        libdirs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(x for x in libdirs if x)
    # the stub runs `python` from PATH and ignores PYTHONPATH: this venv first
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")])
    return env


def process_command(s: ServerSettings) -> tuple[list[str], dict[str, str]]:
    """The tritonserver command line and environment of the process runtime."""
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
    return cmd, process_env(b)


class ProcessRuntime(Runtime):
    name = "process"

    def launch(self, s: ServerSettings) -> dict:
        import psutil

        cmd, env = process_command(s)
        with open(s.log_file, "ab") as log:
            log.write(f"\n==== agent serve start {time.strftime('%Y-%m-%dT%H:%M:%S')}: {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True)
        self._proc = proc  # the child: poll() sees it exit during startup, before psutil would
        atomic_write_text(s.pid_file, f"{proc.pid}\n")
        return {"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time(), "log": str(s.log_file),
                "command": cmd}

    def alive(self, state: dict) -> bool:
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.pid == state.get("pid"):
            return proc.poll() is None
        return own_process(state) is not None

    def log_tail(self, s: ServerSettings, state: dict) -> str:
        return log_tail(s.log_file)

    def stop(self, s: ServerSettings, state: dict, timeout: float) -> bool:
        """Only the recorded pid (checked to still be that tritonserver) and its process
        group (its python-backend stubs) are signalled."""
        import psutil

        p = own_process(state)
        if p is None:
            return False
        children = p.children(recursive=True)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGTERM)
        gone, alive = psutil.wait_procs([p, *children], timeout=timeout)
        for q in alive:
            with contextlib.suppress(psutil.Error):
                q.kill()
        psutil.wait_procs(alive, timeout=5)
        with contextlib.suppress(Exception):
            os.waitpid(p.pid, os.WNOHANG)  # reap it if this very process started it
        return True

    def foreground_command(self, s: ServerSettings) -> tuple[list[str], dict[str, str]]:
        return process_command(s)
