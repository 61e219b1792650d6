"""Model control: make a running server serve what the repository holds, one model at a
time through the API, each checked against the sha256 ``agent repo`` recorded first
(:func:`check_model_files`) — native platforms load engine files without any check of
their own."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import AgentError
from agent.fsutil import atomic_write_text
from agent.triton.client import TritonAPI
from agent.triton.repo import MARKER, VERSION
from agent.triton.server.settings import LOADED_FILE


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
    from agent.build.manifest import check_file_hashes

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
