"""The container tests bound each stage, not one pytest-timeout around a whole
multi-stage fixture: a busy machine slows every stage, and the first test of a
module pays for all the fixture's stages (image, nodes up, site.yml, bench.yml).
Cheap checks, no container starts here."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from node_support import BoundedStage, StageTimeout

ROOT = Path(__file__).resolve().parents[1]


def _ini_timeout() -> float:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return float(cfg["tool"]["pytest"]["ini_options"].get("timeout", 0))


def _timeout_mark(marks) -> float | None:
    marks = marks if isinstance(marks, list) else [marks]
    found = [m.args[0] for m in marks if getattr(m, "name", "") == "timeout"]
    return float(found[0]) if found else None


def test_a_stage_that_overruns_fails_naming_itself() -> None:
    with pytest.raises(StageTimeout, match=r"stage 'site\.yml \(rerun\)' did not finish within its limit of 1 s"):
        with BoundedStage("site.yml (rerun)", 1) as st:
            subprocess.run([sys.executable, "-c", "import time; time.sleep(30)"], timeout=st.left())


def test_a_stage_within_its_limit_passes_through() -> None:
    with BoundedStage("quick", 60) as st:
        subprocess.run([sys.executable, "-c", "pass"], timeout=st.left(), check=True)
    assert 0 < st.left() <= 60
    with pytest.raises(ValueError):  # other failures are not turned into timeouts
        with BoundedStage("other", 60):
            raise ValueError("boom")


def test_e2e_stages_each_have_a_limit_and_pytest_timeout_is_only_the_backstop() -> None:
    e2e = importlib.import_module("test_e2e_fleet")
    limits = e2e.STAGE_LIMITS
    used = set(re.findall(r'Stage\("([^"]+)"\)', (ROOT / "tests" / "test_e2e_fleet.py").read_text()))
    assert used and used <= set(limits), used - set(limits)
    # the old failure: nodes-up + site.yml + bench.yml under one 900 s pytest-timeout
    fixture_stages = ["image+wheel+aptrepo", "network", "nodes up", "collector", "inventory",
                      "site.yml (fresh)", "bench.yml"]
    assert sum(limits[s] for s in fixture_stages) > _ini_timeout()
    backstop = _timeout_mark(e2e.pytestmark)
    assert backstop is not None and backstop >= sum(limits.values()), (backstop, sum(limits.values()))
    # every playbook and report run is bounded by its stage
    src = (ROOT / "tests" / "test_e2e_fleet.py").read_text()
    calls = [_call(src, m.end()) for m in re.finditer(r"\.(playbook|report)\(", src)]
    calls = [c for c in calls if not c.startswith(("self", "name"))]  # the definitions
    assert calls and all("timeout=st.left()" in c for c in calls), calls


def _call(src: str, start: int) -> str:
    """The argument text of the call whose "(" ends at `start`."""
    depth, i = 1, start
    while depth:
        depth += {"(": 1, ")": -1}.get(src[i], 0)
        i += 1
    return src[start:i - 1]


@pytest.mark.parametrize("module", ["test_ansible_agent_triton", "test_ansible_roles"])
def test_other_container_fixtures_are_not_under_the_default_timeout(module: str) -> None:
    mod = importlib.import_module(module)
    if hasattr(mod, "STAGE_LIMITS"):
        backstop = _timeout_mark(mod.pytestmark)
        assert backstop is not None and backstop >= sum(mod.STAGE_LIMITS.values())
    else:  # the Molecule tests carry the mark one by one
        molecule_tests = [getattr(mod, n) for n in dir(mod) if n.startswith("test_molecule")]
        assert molecule_tests
        for t in molecule_tests:
            backstop = _timeout_mark(list(getattr(t, "pytestmark", [])))
            assert backstop is not None and backstop > _ini_timeout(), t.__name__
