"""The build directory's ``manifest.json``: load, save (atomically), cache keys.

An engine is reused only when its record's ``build_key`` equals the key of the
requested build AND every file still hashes to the recorded sha256; anything
else (a changed option or tool version, a corrupt or missing file) rebuilds that
engine alone."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from agent.errors import AgentError
from agent.fsutil import atomic_write_text, sha256_file
from agent.schema import MANIFEST_SCHEMA_VERSION, EngineRecord, Manifest, ToolVersions, utcnow

MANIFEST_NAME = "manifest.json"


def manifest_path(engines_dir: Path) -> Path:
    return Path(engines_dir) / MANIFEST_NAME


def load_manifest(engines_dir: Path, missing_ok: bool = True) -> Manifest:
    """The manifest of ``engines_dir``; an empty one when absent (if ``missing_ok``).
    A manifest that does not parse raises AgentError."""
    path = manifest_path(engines_dir)
    if not path.is_file():
        if missing_ok:
            return Manifest()
        raise AgentError(f"no {MANIFEST_NAME} in {engines_dir}: run `agent build-engines --engines {engines_dir}` first")
    try:
        return Manifest.model_validate_json(path.read_text())
    except (ValidationError, ValueError, OSError) as e:
        first = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
        raise AgentError(f"{path} is not a valid manifest ({' '.join(first.split())[:120]}); "
                         "delete it to rebuild from scratch") from e


def save_manifest(engines_dir: Path, manifest: Manifest) -> None:
    manifest.updated_at = utcnow()
    manifest.schema_version = MANIFEST_SCHEMA_VERSION  # a 1.0 manifest is rewritten as the current version
    atomic_write_text(manifest_path(engines_dir), manifest.model_dump_json(indent=2) + "\n")


def engine_name(model: str, fmt: str, precision: str) -> str:
    suffix = "" if precision == "fp32" else f"_{precision}"
    return f"{model}_{fmt}{suffix}"


def engine_subdir(model: str, fmt: str, precision: str) -> Path:
    """Relative to the build directory: ``<model>/<format>_<precision>``."""
    return Path(model) / f"{fmt}_{precision}"


def build_key(*, model: str, fmt: str, precision: str, max_batch: int, opset: int,
              onnx_exporter: str, workspace_mb: int, pretrained: bool, seed: int,
              exporter_version: str, tools: ToolVersions) -> str:
    """sha256 over everything that determines the artifact (sorted JSON)."""
    parts = {
        "model": model, "format": fmt, "precision": precision, "max_batch": max_batch,
        "pretrained": pretrained, "seed": None if pretrained else seed,
        "exporter_version": exporter_version,
        "torch": tools.torch, "torchvision": tools.torchvision,
    }
    if fmt in ("onnx", "tensorrt"):
        parts.update(opset=opset, onnx_exporter=onnx_exporter, onnx=tools.onnx)
    if fmt == "tensorrt":
        parts.update(tensorrt=tools.tensorrt, workspace_mb=workspace_mb, cuda=tools.cuda,
                     gpu=tools.gpu_name, cc=tools.gpu_compute_capability)
    if precision == "fp16" and fmt != "tensorrt":
        parts.update(cuda=tools.cuda, gpu=tools.gpu_name)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def check_file_hashes(files: Mapping[str, str], root: Path) -> str | None:
    """None when every file (path relative to ``root`` -> sha256) exists and hashes to
    its recorded sha256, else the first problem, naming the file. Shared by
    ``agent repo`` (the build directory's files before anything is written, and
    the copies it writes) and ``agent serve`` (a model's files before Triton is
    asked to load it) and, through ``agent.runners.check_files``, the build cache
    and engine loading."""
    if not files:
        return "no files are recorded"
    for rel, digest in files.items():
        p = Path(root) / rel
        if not p.is_file():
            return f"{rel} is missing"
        try:
            actual = sha256_file(p)
        except OSError as e:
            return f"{rel} cannot be read ({e.strerror or e})"
        if actual != digest:
            return f"{rel} does not match its recorded sha256 (corrupt, truncated or replaced)"
    return None


def ok_records(manifest: Manifest) -> dict[str, EngineRecord]:
    return {k: r for k, r in manifest.engines.items() if r.ok}
