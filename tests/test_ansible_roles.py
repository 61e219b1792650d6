"""The GPU-stack Ansible roles: lint, syntax, preflight failures, and Molecule on
a real systemd container (podman) against a real apt with a local signed
stand-in for NVIDIA's repositories (tests/fixtures/aptrepo).

GPU behaviour itself (driver install, module/kernel mismatch, reboot, CDI,
`--gpus all`) needs a GPU node and is verified on real nodes only; here the
GPU-only steps must be skipped, and the test asserts that they were.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ANSIBLE = ROOT / "ansible"
VENV_BIN = Path(sys.executable).parent
MY_ROLES = ["preflight", "nvidia_repo", "nvidia_driver", "cuda", "cudnn", "tensorrt", "container_runtime", "monitoring_exporters"]

sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "aptrepo"))
from build import build_repo  # noqa: E402

pytestmark = pytest.mark.ansible

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["CONTAINERS_CONF"] = str(ROOT / "scripts" / "containers.conf")
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["PY_COLORS"] = "0"
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "1000"  # molecule wraps long task names at the terminal width
    env.update(extra)
    return env


def _run(cmd: list[str], timeout: int, **env: str) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, cwd=ANSIBLE, env=_env(**env), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        step = " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))
        pytest.fail(f"step `{step}` did not finish within its limit of {timeout} s", pytrace=False)
    proc.stdout = ANSI.sub("", proc.stdout)
    proc.stderr = ANSI.sub("", proc.stderr)
    return proc


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, (
        f"{' '.join(proc.args)} exited {proc.returncode}\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")


def test_ansible_lint_production_profile():
    paths = ["molecule", "group_vars"] + [f"roles/{r}" for r in MY_ROLES]
    _ok(_run([str(VENV_BIN / "ansible-lint"), "--offline", *paths], timeout=300))


@pytest.mark.parametrize("playbook", ["molecule/resources/converge.yml", "molecule/resources/upgrade.yml",
                                      "molecule/resources/verify.yml", "molecule/resources/prepare.yml"])
def test_syntax_check(playbook):
    _ok(_run([str(VENV_BIN / "ansible-playbook"), "--syntax-check", "-i", "localhost,", playbook],
             timeout=120))


# --- preflight: bad input fails early with a message that says what to fix -----------

PREFLIGHT_PLAY = """
- name: Preflight only
  hosts: all
  gather_facts: true
  roles:
    - role: preflight
"""


@pytest.fixture(scope="module")
def preflight_playbook(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("preflight")
    (d / "play.yml").write_text(PREFLIGHT_PLAY)
    # group_vars next to the playbook: the real matrix
    (d / "group_vars").symlink_to(ANSIBLE / "group_vars")
    return d / "play.yml"


def _preflight(playbook: Path, *extra: str) -> subprocess.CompletedProcess:
    return _run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                 "-e", f"ansible_python_interpreter={sys.executable}", str(playbook), *extra], timeout=180)


@pytest.mark.parametrize("extra, message", [
    (["-e", "inferfleet_stack_tensorrt_version=10.3.0.26"],
     "Triton 24.10 ships TensorRT 10.5.0.18"),
    (["-e", "inferfleet_triton_release=23.01"],
     "is not in inferfleet_triton_releases"),
    (["-e", "inferfleet_stack_cuda_version=12.4.1"],
     "set inferfleet_stack_cuda_version to 12.6.2"),
    (["-e", "inferfleet_stack_driver_branch=535", "-e", "inferfleet_stack_driver_version=535.183.01"],
     "needs driver branch >= 560"),
    (["-e", '{"preflight_supported_os": ["Ubuntu-24"]}'],
     "unsupported OS Debian 12"),
    (["-e", "inferfleet_nvidia_cuda_repo_base=http://127.0.0.1:9/cuda/repos"],
     "is unreachable from localhost"),
], ids=["tensorrt-vs-triton", "unknown-release", "cuda", "driver-branch", "os", "mirror"])
def test_preflight_fails_early_with_a_fix(preflight_playbook, extra, message):
    proc = _preflight(preflight_playbook, *extra)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert message in " ".join(out.split()), out[-3000:]
    assert "changed=0" in out  # nothing touched


# --- Molecule on a real systemd container -------------------------------------------


def _podman_ready() -> str | None:
    if shutil.which("podman") is None:
        return "podman is not installed (make system-deps)"
    if os.geteuid() != 0:
        return "the node image needs root (debootstrap)"
    return None


@pytest.fixture(scope="module")
def molecule_env(tmp_path_factory):
    reason = _podman_ready()
    if reason:
        pytest.skip(reason)
    try:
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "node-image.sh")], env=_env(),
                              capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        pytest.fail("step `node-image.sh` did not finish within its limit of 900 s", pytrace=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(proc.stdout.strip())
    repo = build_repo(tmp_path_factory.mktemp("aptrepo") / "repo")
    return {"INFERFLEET_APTREPO": str(repo)}


# Per-step limits are generous for a busy 2-core machine (a quiet one converges in
# ~2-4 min). The module fixture runs node image + create + prepare + converge in
# the first test's setup, so pytest-timeout is only a backstop on these tests.
MOLECULE_STEP_LIMIT = 1200
MOLECULE_TESTS_TIMEOUT = 900 + 180 + 4 * MOLECULE_STEP_LIMIT + 600


def _molecule(step: str, scenario: str, env: dict[str, str], timeout: int = MOLECULE_STEP_LIMIT):
    return _run([str(VENV_BIN / "molecule"), step, "-s", scenario], timeout=timeout, **env)


def _changed_tasks(output: str) -> list[str]:
    """Names of the tasks (and handlers) that reported `changed` in an ansible-playbook run."""
    changed, current = [], None
    for line in output.splitlines():
        m = re.search(r"(?:TASK|RUNNING HANDLER) \[(.+?)\]", line)
        if m:
            current = m.group(1)
        elif current and re.match(r"\s*(?:│\s*)?changed: \[", line):
            if current not in changed:
                changed.append(current)
    return changed


def _destroy(scenario: str, env: dict[str, str]) -> None:
    _molecule("destroy", scenario, env, timeout=180)
    subprocess.run(["podman", "rm", "-f", "-t", "2", f"inferfleet-molecule-{scenario}"], env=_env(),
                   capture_output=True, timeout=120)


# One node container for the whole sequence (create + prepare + first converge in
# the fixture, destroyed at teardown even on failure); the tests below run in order
# on it: first converge, idempotence, verify, upgrade by rerun, verify, downgrade.
# `molecule test -s default` / `-s upgrade` run the same steps standalone.


@pytest.fixture(scope="module")
def node(molecule_env):
    _destroy("default", molecule_env)
    try:
        for step in ("create", "prepare"):
            _ok(_molecule(step, "default", molecule_env))
        converge = _molecule("converge", "default", molecule_env)
        yield {"env": molecule_env, "converge": converge}
    finally:
        _destroy("default", molecule_env)


@pytest.mark.slow
@pytest.mark.timeout(MOLECULE_TESTS_TIMEOUT)
def test_molecule_first_converge_skips_gpu_steps(node):
    converge = node["converge"]
    _ok(converge)
    out = converge.stdout
    # the GPU-only steps were skipped because no GPU was detected
    assert "NVIDIA GPU not detected" in out
    assert re.search(r"TASK \[nvidia_driver : Install and configure the NVIDIA driver \(GPU nodes only\)\]"
                     r"[^\n]*\n(?:[^\n]*\n)?\s*(?:│\s*)?skipping:", out), out[-4000:]
    for gpu_task in ("Blacklist the nouveau driver", "Install the headers of the running kernel",
                     "Enable persistence mode", "Reboot to load driver"):
        assert f"nvidia_driver : {gpu_task}" not in out
    assert re.search(r"TASK \[container_runtime : Generate the CDI specification for podman \(GPU nodes only\)\]"
                     r"[^\n]*\n(?:[^\n]*\n)?\s*(?:│\s*)?skipping:", out), out[-4000:]
    changed = _changed_tasks(out)
    assert changed.count("container_runtime : Restart docker") == 1, changed
    assert "nvidia_repo : Install CUDA toolkit 12.6.2-1" in changed


@pytest.mark.slow
@pytest.mark.timeout(MOLECULE_TESTS_TIMEOUT)
def test_molecule_idempotence(node):
    _ok(node["converge"])
    idem = _molecule("idempotence", "default", node["env"])
    _ok(idem)
    assert re.search(r"changed=0\s", idem.stdout), idem.stdout[-3000:]


@pytest.mark.slow
@pytest.mark.timeout(MOLECULE_TESTS_TIMEOUT)
def test_molecule_check_diff_on_converged_node(node):
    """`ansible-playbook --check --diff` (the converge playbook, on the converged node,
    through `molecule converge -- --check --diff`: `molecule check` would first rebuild
    the node): read-only probes run in check mode, nothing fails, nothing would change."""
    _ok(node["converge"])
    check = _run([str(VENV_BIN / "molecule"), "converge", "-s", "default", "--", "--check", "--diff"],
                 timeout=MOLECULE_STEP_LIMIT, **node["env"])
    _ok(check)
    recap = re.findall(r"inferfleet-molecule-default\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+"
                       r"failed=(\d+)", check.stdout)
    assert len(recap) == 1 and recap[0][1:] == ("0", "0", "0"), check.stdout[-3000:]
    assert int(recap[0][0]) > 50, recap  # the roles ran (not skipped wholesale by check mode)


@pytest.mark.slow
@pytest.mark.timeout(MOLECULE_TESTS_TIMEOUT)
def test_molecule_verify(node):
    _ok(node["converge"])
    _ok(_molecule("verify", "default", node["env"]))


@pytest.mark.slow
@pytest.mark.timeout(MOLECULE_TESTS_TIMEOUT)
def test_molecule_upgrade_by_rerun(node):
    """Bump the matrix (Triton 24.10 -> 24.12, toolkit 1.16.2 -> 1.17.3) and rerun:
    exactly the pinned packages move, nothing else changes, Docker is not restarted
    (its configuration did not change); then verify the new versions."""
    _ok(node["converge"])
    upgrade = _molecule("side-effect", "default", node["env"])
    _ok(upgrade)
    changed = _changed_tasks(upgrade.stdout)
    expected = {
        # pin file rewritten + packages moved, for each of the four package families
        "nvidia_repo : Pin CUDA toolkit at 12.6.3-1", "nvidia_repo : Install CUDA toolkit 12.6.3-1",
        "nvidia_repo : Pin cuDNN at 9.6.0.74-1", "nvidia_repo : Install cuDNN 9.6.0.74-1",
        "nvidia_repo : Pin TensorRT at 10.7.0.23-1+cuda12.6",
        "nvidia_repo : Install TensorRT 10.7.0.23-1+cuda12.6",
        "nvidia_repo : Pin NVIDIA Container Toolkit at 1.17.3-1",
        "nvidia_repo : Install NVIDIA Container Toolkit 1.17.3-1",
        # the node's stack record (read by the agent to rebuild engines)
        "preflight : Record the installed stack versions",
    }
    assert set(changed) == expected, f"changed: {changed}"
    _ok(_molecule("verify", "default", {**node["env"], "INFERFLEET_VERIFY_UPGRADED": "1"}))


@pytest.mark.slow
@pytest.mark.timeout(MOLECULE_TESTS_TIMEOUT)
@pytest.mark.skipif(os.environ.get("INFERFLEET_TEST_DOWNGRADE") != "1",
                    reason="one more full converge (~2 min) beyond make test's time budget for these roles: "
                           "set INFERFLEET_TEST_DOWNGRADE=1 (passed when run: 130 s)")
def test_molecule_downgrade_by_rerun(node):
    """Rerunning the 24.10 converge after the upgrade moves the packages back down."""
    _ok(node["converge"])
    down = _molecule("converge", "default", node["env"])
    _ok(down)
    moved = set(_changed_tasks(down.stdout))
    assert {"nvidia_repo : Install CUDA toolkit 12.6.2-1", "nvidia_repo : Install cuDNN 9.5.0.50-1",
            "nvidia_repo : Install TensorRT 10.5.0.18-1+cuda12.6",
            "nvidia_repo : Install NVIDIA Container Toolkit 1.16.2-1"} <= moved, moved
    assert "container_runtime : Restart docker" not in moved
