"""Write a Triton model repository from an engine build directory.

One model per verified engine, named like the engine (``<model>_<format>[_<precision>]``):

    <repo>/<name>/config.pbtxt      rendered from templates/triton/config.pbtxt.j2
    <repo>/<name>/inferfleet.json   what was written (makes rewrites idempotent)
    <repo>/<name>/1/<engine files>  model.onnx (+ model.onnx.data) | model.pt | model.plan

Two variants (``backend``):

* ``platform`` — the GPU-node repository for the NGC image: Triton's own backends
  (platform ``onnxruntime_onnx`` / ``pytorch_libtorch`` / ``tensorrt_plan``), KIND_GPU.
* ``python`` — for the CPU-only ``tritonserver`` bundled in nvidia-pytriton
  (python backend only): ``1/model.py`` (agent/triton/python_model.py) runs
  the same engine file through ``agent.runners`` on the CPU, KIND_CPU.
  TensorRT engines have no python variant (no TensorRT on CPU nodes).

Only engines whose verification passed enter the repository. Before anything
is written, every file of every selected engine is checked against its manifest
sha256: one mismatch (or missing file) refuses the whole write and leaves the
repository exactly as it was. Engine files enter as reflinks or copies, never
hard links (a later change in the build directory cannot reach the served
copy), and ``inferfleet.json`` records the sha256 of every file of the version
directory (``repo_files``), which ``agent serve`` checks before it asks Triton
to load the model. Each model directory is staged in a temporary sibling; the
copies are checked, then all are renamed into place. A model is left untouched
when nothing changed and its files still match, so that ``agent serve reload``
reloads exactly the models that changed."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from agent import defaults
from agent.build.manifest import check_file_hashes, load_manifest, manifest_path
from agent.errors import AgentError
from agent.exporters import FILENAMES
from agent.fsutil import atomic_path, clone_or_copy, remove_stale_temporaries, sha256_file
from agent.schema import EngineRecord
from agent.templating import render

MARKER = "inferfleet.json"
VERSION = "1"
PLATFORMS = {"onnx": "onnxruntime_onnx", "torchscript": "pytorch_libtorch", "tensorrt": "tensorrt_plan"}
TRITON_DTYPES = {
    "float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "int64": "TYPE_INT64",
    "int32": "TYPE_INT32", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL",
}


def wire_dtype(dtype: str) -> str:
    """The datatype of a tensor on the wire (KServe v2: ``FP32``...) for a numpy dtype name."""
    return TRITON_DTYPES[dtype].removeprefix("TYPE_")


BACKENDS = ("python", "platform")
BACKEND_ALIASES = {"native": "platform"}  # its name before 0.2 (the CLI warns)


@dataclass(frozen=True)
class RepoOptions:
    backend: str = "python"  # python | platform
    kind: str = "auto"  # auto | gpu | cpu (auto: GPU for platform, CPU for python)
    instances: int = 1
    dynamic_batching: bool = True
    queue_delay_us: int = defaults.QUEUE_DELAY_US
    preferred_batch_sizes: tuple[int, ...] | None = None  # default: defaults.PREFERRED_BATCH_SIZES up to max_batch
    models: tuple[str, ...] = ()  # only these models (default: all)
    formats: tuple[str, ...] = ()  # only these formats (default: all)
    classifiers: bool = False  # image classification ensembles (agent/triton/classifier.py)

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend", BACKEND_ALIASES.get(self.backend, self.backend))


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


def engine_files(record: EngineRecord) -> dict[str, str]:
    """The engine's files by their name inside the version directory."""
    return {Path(rel).name: sha for rel, sha in record.files.items()}


def render_config(record: EngineRecord, opts: RepoOptions) -> str:
    if opts.backend not in BACKENDS:
        raise AgentError(f"unknown backend {opts.backend!r}: use python or platform")
    kind = opts.kind if opts.kind != "auto" else ("gpu" if opts.backend == "platform" else "cpu")
    if record.format == "tensorrt" and kind != "gpu":
        raise AgentError(f"{record.name}: TensorRT engines run on the GPU only (--kind gpu)")
    batched = record.max_batch > 0
    preferred = opts.preferred_batch_sizes
    if preferred is None:
        preferred = defaults.PREFERRED_BATCH_SIZES
    preferred = tuple(b for b in preferred if b <= record.max_batch)
    return render(
        "triton/config.pbtxt.j2",
        model_name=record.name,
        engine=record,
        backend=opts.backend,
        platform=PLATFORMS.get(record.format, ""),  # platform only; the python backend runs any format
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
    """An engine file enters the repository as a reflink or a copy, never a hard link:
    changing the build directory afterwards must not change what Triton serves."""
    clone_or_copy(src, dest)


def _python_model_source() -> Path:
    return Path(__file__).with_name("python_model.py")


def _engine_json(record: EngineRecord) -> str:
    flat = record.model_copy(update={"files": engine_files(record), "device": "cpu"})
    return flat.model_dump_json(indent=2) + "\n"


def repo_files(record: EngineRecord, opts: RepoOptions) -> dict[str, str]:
    """Every file of the model's version directory (``1/<name>``) -> sha256: what
    ``agent serve`` checks before it asks Triton to load the model."""
    files = {f"{VERSION}/{name}": sha for name, sha in engine_files(record).items()}
    if opts.backend == "python":
        files[f"{VERSION}/engine.json"] = hashlib.sha256(_engine_json(record).encode()).hexdigest()
        files[f"{VERSION}/model.py"] = sha256_file(_python_model_source())
    return files


def _stage_model(stack: contextlib.ExitStack, engines_dir: Path, repo: Path, record: EngineRecord,
                 opts: RepoOptions, marker: dict) -> None:
    """Write the model directory to a temporary sibling, renamed into place when
    ``stack`` closes without an error (removed, and nothing renamed, otherwise)."""
    tmp = stack.enter_context(atomic_path(repo / record.name))
    version = tmp / VERSION
    version.mkdir(parents=True)
    (tmp / "config.pbtxt").write_text(render_config(record, opts))
    for rel in record.files:  # model.onnx.data must sit beside model.onnx
        _place(engines_dir / rel, version / Path(rel).name)
    if opts.backend == "python":
        (version / "engine.json").write_text(_engine_json(record))
        shutil.copyfile(_python_model_source(), version / "model.py")
    problem = check_file_hashes(marker["repo_files"], tmp)
    if problem:  # changed while it was being copied
        raise AgentError(f"engine {record.name}: its copy in the repository: {problem}; "
                         f"nothing in {repo} was changed")
    (tmp / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")


def _in_place(model_dir: Path, marker: dict) -> bool:
    """The model directory is already what ``marker`` describes: same marker, a config,
    and every recorded file with its sha256."""
    try:
        old = json.loads((model_dir / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (old == marker and (model_dir / "config.pbtxt").is_file()
            and check_file_hashes(marker["repo_files"], model_dir) is None)


def _stage_extra(stack: contextlib.ExitStack, repo: Path, extra) -> bool:  # noqa: ANN001 - ExtraModel
    """Stage a model that is not an engine (its files given as bytes); False when the one in
    place is already identical."""
    if _in_place(repo / extra.name, extra.marker):
        return False
    tmp = stack.enter_context(atomic_path(repo / extra.name))
    (tmp / VERSION).mkdir(parents=True)  # an ensemble's version directory stays empty
    for rel, data in extra.files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(data)
    (tmp / MARKER).write_text(json.dumps(extra.marker, indent=2, sort_keys=True) + "\n")
    return True


def _check_files(engines_dir: Path, record: EngineRecord) -> str | None:
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
        raise AgentError(f"unknown --backend {opts.backend!r}: use python or platform")
    if opts.kind not in ("auto", "gpu", "cpu"):
        raise AgentError(f"unknown --kind {opts.kind!r}: use auto, gpu or cpu")
    if opts.instances < 1 or opts.queue_delay_us < 0:
        raise AgentError("--instances must be >= 1 and --queue-delay-us >= 0")
    engines_dir = Path(engines_dir)
    manifest = load_manifest(engines_dir, missing_ok=False)
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise AgentError(f"--repo {repo} exists and is not a directory")
    known = {r.model for r in manifest.engines.values()}
    unknown = [m for m in opts.models if m not in known]
    if unknown:
        raise AgentError(f"no engines for model(s) {', '.join(unknown)} in {engines_dir}/manifest.json "
                         f"(have: {', '.join(sorted(known)) or 'none'})")
    # 1. every selected engine's files against the manifest, before anything is written
    todo: list[tuple[EngineRecord, dict]] = []
    skipped: dict[str, str] = {}
    corrupt: list[str] = []
    for key, record in sorted(manifest.engines.items()):
        if opts.models and record.model not in opts.models:
            continue
        if opts.formats and record.format not in opts.formats:
            continue
        if not record.ok:
            why = record.verification.message if record.verification else "never verified"
            skipped[record.name] = f"verification did not pass ({why})" if record.verification else why
            continue
        if opts.backend == "python" and record.format == "tensorrt":
            skipped[record.name] = "TensorRT engines have no python-backend variant (use --backend platform)"
            continue
        if opts.backend == "platform" and record.format not in PLATFORMS:
            skipped[record.name] = f"no Triton platform runs {record.format} (use --backend python)"
            continue
        problem = _check_files(engines_dir, record)
        if problem:
            skipped[record.name] = problem
            continue
        problem = check_file_hashes(record.files, engines_dir)
        if problem:
            corrupt.append(f"engine {record.name}: {problem}")
            continue
        if opts.backend == "platform" and not any(Path(rel).name == FILENAMES[record.format]
                                                for rel in record.files):
            raise AgentError(f"{record.name}: the manifest lists no {FILENAMES[record.format]}")
        marker = {
            "engine": record.name, "build_key": record.build_key, "files": record.files,
            "repo_files": repo_files(record, opts),
            "backend": opts.backend, "config": render_config(record, opts),
        }
        if opts.backend == "python":
            marker["python_model"] = _python_model_source().read_text()
        todo.append((record, marker))
    if corrupt:
        raise AgentError(f"refusing to write the Triton repository {repo}: {'; '.join(corrupt)} "
                         f"(manifest {manifest_path(engines_dir)}); nothing in {repo} was changed — "
                         f"rerun `agent build-engines --engines {engines_dir}` to rebuild the engine(s)")

    # 2. stage every new or changed model, check the copies, then rename them all into place
    repo.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(repo)
    report = RepoReport(repo=repo, skipped=skipped)
    selected: set[str] = set()
    with contextlib.ExitStack() as stack:
        for record, marker in todo:
            selected.add(record.name)
            if _in_place(repo / record.name, marker):
                report.unchanged.append(record.name)
                continue
            _stage_model(stack, engines_dir, repo, record, opts, marker)
            report.written.append(record.name)
        if opts.classifiers:
            from agent.triton.classifier import classifier_models

            for extra in classifier_models([r for r, _ in todo], instances=opts.instances):
                selected.add(extra.name)
                if _stage_extra(stack, repo, extra):
                    report.written.append(extra.name)
                else:
                    report.unchanged.append(extra.name)
    for d in sorted(repo.iterdir()):
        if d.is_dir() and (d / MARKER).is_file() and d.name not in selected:
            shutil.rmtree(d)
            report.removed.append(d.name)
    return report


def default_repo(engines: Path) -> Path:
    """The repository ``agent repo`` and ``agent build-engines`` write by default."""
    return Path(engines) / "triton-repo"


def write_build_repository(engines: Path, repo_dir: Path | None, backend: str = "auto",
                           classifiers: bool = False) -> tuple[RepoReport, str] | None:
    """The repository step of ``agent build-engines``: (report, backend used), or None when
    nothing was built. ``auto``: the ``platform`` repository on a GPU node, else ``python``."""
    if backend == "auto":
        from agent.facts import gpu_facts  # not torch: a no-op build must not pay its import

        backend = "platform" if gpu_facts() else "python"
    if not manifest_path(engines).is_file():
        return None
    opts = RepoOptions(backend=backend, classifiers=classifiers)
    return write_repository(engines, repo_dir or default_repo(engines), opts), opts.backend
