"""The TensorRT code cannot run here (no TensorRT, no GPU), so it is type-checked
against TensorRT's own API description: mypy with `tensorrt-stubs` (a real wheel,
installed by scripts/typestubs.sh under build/typestubs, outside the runtime venv).
A misspelt API name or a wrong argument type fails this test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MYPY = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--no-incremental"]


@pytest.fixture(scope="module")
def stubs() -> Path:
    r = subprocess.run(["bash", str(ROOT / "scripts" / "typestubs.sh"), str(ROOT / "build" / "typestubs")],
                       capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PIP": f"{sys.executable} -m pip"})
    if r.returncode != 0:
        pytest.skip(f"tensorrt-stubs could not be installed from PyPI: {r.stderr.strip()[-300:]}")
    assert (ROOT / "build" / "typestubs" / "tensorrt_bindings" / "tensorrt.pyi").is_file()
    return ROOT / "build" / "typestubs"


def test_tensorrt_code_type_checks_against_the_stubs(stubs):
    r = subprocess.run(MYPY, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no issues found in 2 source files" in r.stdout


def test_a_wrong_tensorrt_call_is_caught(stubs, tmp_path):
    src = (ROOT / "agent" / "exporters" / "tensorrt.py").read_text()
    broken = (src.replace("builder.create_network(flags)", "builder.create_netwerk(flags)")
                 .replace("opts.workspace_mb << 20", "f'{opts.workspace_mb}MiB'"))
    assert broken != src
    (tmp_path / "tensorrt_broken.py").write_text(broken)
    r = subprocess.run([*MYPY, str(tmp_path / "tensorrt_broken.py")], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 1, r.stdout + r.stderr
    assert '"Builder" has no attribute "create_netwerk"' in r.stdout
    assert 'Argument 2 to "set_memory_pool_limit" of "IBuilderConfig" has incompatible type "str"' in r.stdout
