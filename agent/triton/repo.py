"""Write a Triton model repository from an engine build directory.

One model per verified engine, named like the engine (``<model>_<format>[_<precision>]``):

    <repo>/<name>/config.pbtxt      rendered from templates/triton/config.pbtxt.j2
    <repo>/<name>/inferfleet.json   what was written (makes rewrites idempotent)
    <repo>/<name>/1/<engine files>  model.onnx (+ model.onnx.data) | model.pt | model.plan

Two variants (``backend``):

* ``native`` — the GPU-node repository for the NGC image: platform
  ``onnxruntime_onnx`` / ``pytorch_libtorch`` / ``tensorrt_plan``, KIND_GPU.
* ``python`` — for the CPU-only ``tritonserver`` bundled in nvidia-pytriton
  (python backend only): ``1/model.py`` (agent/triton/python_model.py) runs
  the same engine file through ``agent.runtimes`` on the CPU, KIND_CPU.
  TensorRT engines have no python variant (no TensorRT on CPU nodes).

Only engines whose verification passed enter the repository. Each model
directory is written to a temporary sibling and renamed into place, and is
left untouched when nothing changed, so that ``agent serve reload`` reloads
exactly the models that changed."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import AgentError
from agent.fsutil import atomic_path, remove_stale_temporaries
from agent.schema import EngineRecord, Manifest
from agent.templating import render

MARKER = "inferfleet.json"
VERSION = "1"
PLATFORMS = {"onnx": "onnxruntime_onnx", "torchscript": "pytorch_libtorch", "tensorrt": "tensorrt_plan"}
FILENAMES = {"onnx": "model.onnx", "torchscript": "model.pt", "tensorrt": "model.plan"}
TRITON_DTYPES = {
    "float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "int64": "TYPE_INT64",
    "int32": "TYPE_INT32", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL",
}
BACKENDS = ("python", "native")


@dataclass(frozen=True)
class RepoOptions:
    backend: str = "python"  # python | native
    kind: str = "auto"  # auto | gpu | cpu (auto: GPU for native, CPU for python)
    instances: int = 1
    dynamic_batching: bool = True
    queue_delay_us: int = 100
    preferred_batch_sizes: tuple[int, ...] | None = None  # default: 4, 8, 16, 32 up to max_batch
    models: tuple[str, ...] = ()  # only these models (default: all)
    formats: tuple[str, ...] = ()  # only these formats (default: all)


@dataclass
class RepoReport:
    repo: Path
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # engine name -> why

    @property
    def models(self) -> list[str]:
        return sorted(self.written + self.unchanged)


def load_manifest(engines_dir: Path) -> Manifest:
    from agent.manifest import load_manifest as load

    return load(engines_dir, missing_ok=False)


def repo_models(repo: Path) -> list[str]:
    """Model names in a repository: the directories holding a config.pbtxt."""
    repo = Path(repo)
    if not repo.is_dir():
        return []
    return sorted(p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file() and not p.name.startswith("."))


def _tensor(t, batched: bool) -> dict:
    if t.dtype not in TRITON_DTYPES:
        raise AgentError(f"tensor {t.name!r}: dtype {t.dtype} has no Triton type")
    dims = t.shape[1:] if batched else t.shape
    return {"name": t.name, "data_type": TRITON_DTYPES[t.dtype], "dims": dims}


def python_files(record: EngineRecord) -> dict[str, str]:
    """The engine's files by their name inside the version directory."""
    return {Path(rel).name: sha for rel, sha in record.files.items()}


def render_config(record: EngineRecord, opts: RepoOptions) -> str:
    if opts.backend not in BACKENDS:
        raise AgentError(f"unknown backend {opts.backend!r}: use python or native")
    kind = opts.kind if opts.kind != "auto" else ("gpu" if opts.backend == "native" else "cpu")
    if record.format == "tensorrt" and kind != "gpu":
        raise AgentError(f"{record.name}: TensorRT engines run on the GPU only (--kind gpu)")
    batched = record.max_batch > 0
    preferred = opts.preferred_batch_sizes
    if preferred is None:
        preferred = tuple(b for b in (4, 8, 16, 32) if b <= record.max_batch)
    preferred = tuple(b for b in preferred if b <= record.max_batch)
    return render(
        "triton/config.pbtxt.j2",
        model_name=record.name,
        engine=record,
        backend=opts.backend,
        platform=PLATFORMS[record.format],
        model_filename=FILENAMES[record.format],
        max_batch_size=record.max_batch if batched else 0,
        inputs=[_tensor(t, batched) for t in record.inputs],
        outputs=[_tensor(t, batched) for t in record.outputs],
        dynamic_batching=opts.dynamic_batching and batched,
        preferred_batch_sizes=list(preferred),
        queue_delay_us=opts.queue_delay_us,
        instances=opts.instances,
        kind="KIND_GPU" if kind == "gpu" else "KIND_CPU",
    )


def _place(src: Path, dest: Path) -> None:
    """Hard-link an engine file into the repository (copy across filesystems)."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def _python_model_source() -> Path:
    return Path(__file__).with_name("python_model.py")


def _write_model(engines_dir: Path, repo: Path, record: EngineRecord, opts: RepoOptions, marker: dict) -> None:
    with atomic_path(repo / record.name) as tmp:
        version = tmp / VERSION
        version.mkdir(parents=True)
        (tmp / "config.pbtxt").write_text(render_config(record, opts))
        if opts.backend == "python":
            for rel in record.files:
                _place(engines_dir / rel, version / Path(rel).name)
            flat = record.model_copy(update={"files": python_files(record), "device": "cpu"})
            (version / "engine.json").write_text(flat.model_dump_json(indent=2) + "\n")
            shutil.copyfile(_python_model_source(), version / "model.py")
        else:
            main = [rel for rel in record.files if Path(rel).name == FILENAMES[record.format]]
            if not main:
                raise AgentError(f"{record.name}: the manifest lists no {FILENAMES[record.format]}")
            for rel in record.files:  # model.onnx.data must sit beside model.onnx
                _place(engines_dir / rel, version / Path(rel).name)
        (tmp / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")


def _check_files(engines_dir: Path, record: EngineRecord) -> str | None:
    for rel in record.files:
        if not (engines_dir / rel).is_file():
            return f"engine file {rel} is missing"
    names = [Path(rel).name for rel in record.files]
    if len(set(names)) != len(names):
        return "engine files with the same name in different directories"
    return None


def write_repository(engines_dir: Path, repo: Path, opts: RepoOptions | None = None) -> RepoReport:
    """Mirror the verified engines of ``engines_dir`` into the Triton repository ``repo``.

    Model directories written by this function (marked with inferfleet.json)
    whose engine is no longer selected are removed; other directories are left
    alone."""
    opts = opts or RepoOptions()
    if opts.backend not in BACKENDS:
        raise AgentError(f"unknown --backend {opts.backend!r}: use python or native")
    if opts.kind not in ("auto", "gpu", "cpu"):
        raise AgentError(f"unknown --kind {opts.kind!r}: use auto, gpu or cpu")
    if opts.instances < 1 or opts.queue_delay_us < 0:
        raise AgentError("--instances must be >= 1 and --queue-delay-us >= 0")
    engines_dir = Path(engines_dir)
    manifest = load_manifest(engines_dir)
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise AgentError(f"--repo {repo} exists and is not a directory")
    known = {r.model for r in manifest.engines.values()}
    unknown = [m for m in opts.models if m not in known]
    if unknown:
        raise AgentError(f"no engines for model(s) {', '.join(unknown)} in {engines_dir}/manifest.json "
                         f"(have: {', '.join(sorted(known)) or 'none'})")
    repo.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(repo)
    report = RepoReport(repo=repo)
    selected: set[str] = set()
    for key, record in sorted(manifest.engines.items()):
        if opts.models and record.model not in opts.models:
            continue
        if opts.formats and record.format not in opts.formats:
            continue
        if not record.ok:
            why = record.verification.message if record.verification else "never verified"
            report.skipped[record.name] = f"verification did not pass ({why})" if record.verification else why
            continue
        if opts.backend == "python" and record.format == "tensorrt":
            report.skipped[record.name] = "TensorRT engines have no python-backend variant (use --backend native)"
            continue
        problem = _check_files(engines_dir, record)
        if problem:
            report.skipped[record.name] = problem
            continue
        marker = {
            "engine": record.name, "build_key": record.build_key, "files": record.files,
            "backend": opts.backend, "config": render_config(record, opts),
        }
        if opts.backend == "python":
            marker["python_model"] = _python_model_source().read_text()
        selected.add(record.name)
        try:
            old = json.loads((repo / record.name / MARKER).read_text())
        except (OSError, ValueError):
            old = None
        if old == marker and (repo / record.name / "config.pbtxt").is_file():
            report.unchanged.append(record.name)
            continue
        _write_model(engines_dir, repo, record, opts, marker)
        report.written.append(record.name)
    for d in sorted(repo.iterdir()):
        if d.is_dir() and (d / MARKER).is_file() and d.name not in selected:
            shutil.rmtree(d)
            report.removed.append(d.name)
    return report
