"""Shared fixtures. ``built_engines``: one real build (TorchScript + ONNX,
max batch 4) of squeezenet1_1, mobilenet_v3_small and resnet18, made once per
test session; the serving tests reuse it. Treat it as read-only: copy it
(``shutil.copytree``) before changing anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BUILT_MODELS = ("squeezenet1_1", "mobilenet_v3_small", "resnet18")
BUILT_MAX_BATCH = 4


@pytest.fixture(scope="session")
def built_engines(tmp_path_factory) -> Path:
    from agent.build.pipeline import BuildOptions, failures_error, run_build

    out = tmp_path_factory.mktemp("built_engines") / "engines"
    outcomes = run_build(BuildOptions(models=list(BUILT_MODELS), out=out,
                                      formats=["torchscript", "onnx"], max_batch=BUILT_MAX_BATCH),
                         show=False)
    err = failures_error(outcomes)
    assert err is None, str(err)
    return out


def run_cli(*args: str, env: dict | None = None, timeout: float = 300,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m agent ARGS`` in a subprocess (text output, never raises)."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd)


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The CLI's one-line error (asserts there is exactly one and no traceback)."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
def cli():
    return run_cli
