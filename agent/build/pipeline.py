"""``agent build-engines``: plan, build (one subprocess per model), record, summarise.

1. Validate everything first (models, formats, precisions, output directory):
   bad input fails before any work with a one-line error.
2. Take a lock on the output directory, delete stale ``.tmp-*`` left by killed
   builds, and plan: an engine is reused when its manifest record has the same
   build key and every file matches its sha256; otherwise it is rebuilt (its
   stale record is dropped from the manifest first).
3. Engines build in a long-lived ``python -m agent.build.worker`` (torch is
   imported once, not once per model): an exporter crash, a segfault, an OOM
   kill or ``--timeout`` fails that model's engines, not the run — the next
   model gets a fresh worker. Workers are also recycled every
   ``MODELS_PER_WORKER`` models to bound their memory. The manifest is
   rewritten atomically after every engine.
4. A summary table; failures (export errors, verification outside tolerance)
   make the command exit non-zero, naming every failed engine."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from agent import registry
from agent.build.manifest import build_key, engine_name, load_manifest, save_manifest
from agent.defaults import MAX_BATCH
from agent.errors import AgentError
from agent.exporters import (
    DEFAULT_FORMATS,
    DEFAULT_OPSET,
    EXPORTER_VERSIONS,
    FORMATS,
    ONNX_EXPORTERS,
    PRECISIONS,
    ExportOptions,
    check_supported,
)
from agent.fsutil import ensure_writable_dir, remove_stale_temporaries
from agent.runners import check_files
from agent.schema import EngineRecord, Manifest, ToolVersions

LOCK_NAME = ".build.lock"
MODELS_PER_WORKER = 8  # INFERFLEET_BUILD_MODELS_PER_WORKER overrides (1: a fresh worker per model)


def models_per_worker() -> int:
    value = os.environ.get("INFERFLEET_BUILD_MODELS_PER_WORKER", "")
    if not value:
        return MODELS_PER_WORKER
    if not value.isdigit() or int(value) < 1:
        raise AgentError(f"INFERFLEET_BUILD_MODELS_PER_WORKER must be a whole number >= 1, got {value!r}")
    return int(value)


@dataclass
class BuildOptions:
    models: list[str]
    out: Path
    formats: list[str] = field(default_factory=lambda: list(DEFAULT_FORMATS))
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    max_batch: int = MAX_BATCH
    pretrained: bool = False
    opset: int = DEFAULT_OPSET
    onnx_exporter: str = "legacy"
    workspace_mb: int = 2048
    timeout_s: float | None = None  # per model (worker)

    def export_options(self) -> ExportOptions:
        return ExportOptions(max_batch=self.max_batch, opset=self.opset, onnx_exporter=self.onnx_exporter,
                             workspace_mb=self.workspace_mb,
                             timing_cache=self.out / ".cache" / "tensorrt-timing.cache")


class Job(BaseModel):
    """One engine to build."""

    model: str
    format: str
    precision: str
    key: str

    @property
    def name(self) -> str:
        return engine_name(self.model, self.format, self.precision)


class WorkerJob(BaseModel):
    """One model's engines as they cross to the build worker: one JSON line, this shape
    on both sides (``agent/build/worker.py`` validates it back)."""

    model: str
    out: Path
    pretrained: bool
    tools: ToolVersions
    jobs: list[Job]
    export: ExportOptions  # precision: per job


@dataclass
class Outcome:
    name: str
    status: str  # built | cached | failed
    record: EngineRecord | None = None
    message: str = ""


def validate_choices(values: list[str], allowed: tuple[str, ...], what: str) -> list[str]:
    for v in values:
        if v not in allowed:
            raise AgentError(f"unknown {what} {v!r}{registry.suggest(v, allowed)}; "
                             f"choose from {', '.join(allowed)}")
    return list(dict.fromkeys(values))


def validate(opts: BuildOptions) -> None:
    validate_choices(opts.formats, FORMATS, "format")
    validate_choices(opts.precisions, PRECISIONS, "precision")
    if opts.onnx_exporter not in ONNX_EXPORTERS:
        raise AgentError(f"unknown ONNX exporter {opts.onnx_exporter!r}: use legacy or dynamo")
    if opts.max_batch < 1:
        raise AgentError(f"--max-batch must be >= 1, got {opts.max_batch}")
    if not opts.models:
        raise AgentError("no models to build: name them with --models a,b or use --all")
    for m in opts.models:
        registry.get(m)
    for fmt in opts.formats:
        for prec in opts.precisions:
            check_supported(fmt, prec)


@contextlib.contextmanager
def build_lock(out: Path) -> Iterator[None]:
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AgentError(f"another agent build-engines is running in {out}") from None
        yield
    finally:
        os.close(fd)


def plan(opts: BuildOptions, manifest: Manifest, tools: ToolVersions) -> tuple[list[Job], list[Outcome]]:
    todo: list[Job] = []
    cached: list[Outcome] = []
    for m in opts.models:
        spec = registry.get(m)
        for fmt in opts.formats:
            for prec in opts.precisions:
                key = build_key(model=m, fmt=fmt, precision=prec, max_batch=opts.max_batch,
                                opset=opts.opset, onnx_exporter=opts.onnx_exporter,
                                workspace_mb=opts.workspace_mb, pretrained=opts.pretrained,
                                seed=spec.seed, exporter_version=EXPORTER_VERSIONS[fmt],
                                tools=tools)
                job = Job(model=m, format=fmt, precision=prec, key=key)
                rec = manifest.engines.get(job.name)
                if (rec is not None and rec.build_key == key and rec.ok
                        and check_files(rec, opts.out) is None):
                    cached.append(Outcome(job.name, "cached", rec))
                else:
                    todo.append(job)
    return todo, cached


def _worker_cmd() -> list[str]:
    return [sys.executable, "-m", "agent.build.worker"]


def _last_line(log: Path) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


class WorkerPool:
    """One build worker at a time, reused from model to model until it dies or has
    built ``models_per_worker()`` models."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.limit = models_per_worker()
        self.proc: subprocess.Popen | None = None
        self.log: Path | None = None
        self.started = 0  # workers started (for tests and the summary)
        self.served = 0  # models built by the current worker

    def _ensure(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None or self.served >= self.limit:
            self.close()
            self.started += 1
            self.log = self.log_dir / f"worker-{self.started}.log"
            with open(self.log, "wb") as err:
                self.proc = subprocess.Popen(_worker_cmd(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=err, text=True, bufsize=1)
            self.served = 0
        return self.proc

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.stdin and not proc.stdin.closed:
                proc.stdin.close()  # end of jobs: the worker exits
            proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()

    def run(self, model: str, jobs: list[Job], opts: BuildOptions, tools: ToolVersions,
            on_start, on_done) -> None:
        """Build one model's jobs; call ``on_done(name, record|None, error)`` for every job,
        including those a crashed or killed worker never reported."""
        payload = WorkerJob(model=model, out=opts.out, pretrained=opts.pretrained, tools=tools, jobs=jobs,
                            export=opts.export_options())
        pending = {j.name for j in jobs}
        proc = self._ensure()
        timer = None
        if opts.timeout_s:
            import threading

            timer = threading.Timer(opts.timeout_s, proc.kill)
            timer.daemon = True
            timer.start()
        finished = False
        try:
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(payload.model_dump_json() + "\n")
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass  # died before reading: reported below
            for line in proc.stdout:
                if line.startswith("@@start "):
                    on_start(line.split(" ", 1)[1].strip())
                elif line.startswith("@@done "):
                    ev = json.loads(line.split(" ", 1)[1])
                    pending.discard(ev["name"])
                    rec = EngineRecord.model_validate(ev["record"]) if ev["record"] else None
                    on_done(ev["name"], rec, ev["error"])
                elif line.startswith("@@model "):
                    finished = True
                    break
        finally:
            if timer is not None:
                timer.cancel()
        self.served += 1
        if finished and not pending:
            return
        rc = proc.wait()  # the worker died (or was killed) in the middle of this model
        self.proc = None
        if rc < 0:
            why = f"worker killed by signal {-rc}"
            if -rc == 9:
                why += " (out of memory or --timeout)"
        else:
            why = f"worker exited with code {rc}"
        last = _last_line(self.log) if self.log else ""
        for name in sorted(pending):
            on_done(name, None, f"{why}{': ' + last if last else ''}")


def run_build(opts: BuildOptions, show: bool = True) -> list[Outcome]:
    """Build what is missing or stale; return one Outcome per requested engine."""
    from agent.facts import tool_versions
    from agent.ui import console_err, progress

    opts.out = Path(opts.out)
    opts.models = list(dict.fromkeys(opts.models))
    validate(opts)
    ensure_writable_dir(opts.out)
    with build_lock(opts.out):
        remove_stale_temporaries(opts.out)
        try:
            manifest = load_manifest(opts.out)
        except AgentError as e:
            console_err.print(f"[yellow]warning:[/] {e}; rebuilding every engine", highlight=False)
            manifest = Manifest()
        tools = tool_versions()
        todo, outcomes = plan(opts, manifest, tools)
        stale = [j.name for j in todo if j.name in manifest.engines]
        for name in stale:  # never leave a record that points at files about to change
            del manifest.engines[name]
        if stale or not (opts.out / "manifest.json").exists():
            save_manifest(opts.out, manifest)

        by_model: dict[str, list[Job]] = {}
        for j in todo:
            by_model.setdefault(j.model, []).append(j)

        bar = progress() if show else contextlib.nullcontext()
        with bar as p, tempfile.TemporaryDirectory(prefix="inferfleet-build-") as logs:
            task = p.add_task("building", total=len(todo)) if p else None

            def on_start(name: str) -> None:
                if p:
                    p.update(task, description=f"building {name}")

            def on_done(name: str, rec: EngineRecord | None, error: str | None) -> None:
                if rec is not None:
                    manifest.engines[name] = rec
                    save_manifest(opts.out, manifest)
                    if rec.ok:
                        outcomes.append(Outcome(name, "built", rec))
                    else:
                        outcomes.append(Outcome(name, "failed", rec,
                                                f"verification: {rec.verification.message}"))
                else:
                    outcomes.append(Outcome(name, "failed", None, error or "unknown error"))
                if p:
                    p.advance(task)

            pool = WorkerPool(Path(logs))
            try:
                for model, jobs in by_model.items():
                    pool.run(model, jobs, opts, tools, on_start, on_done)
            finally:
                pool.close()
            if p:
                p.update(task, description="done")
    order = {engine_name(m, f, pr): i for i, (m, f, pr) in enumerate(
        (m, f, pr) for m in opts.models for f in opts.formats for pr in opts.precisions)}
    return sorted(outcomes, key=lambda o: order.get(o.name, 1 << 30))


def print_summary(outcomes: list[Outcome]) -> None:
    from rich.console import Console
    from rich.table import Table

    from agent.ui import console

    console = console if console.is_terminal else Console(width=200)
    t = Table(title="engines", title_justify="left")
    for col in ("engine", "status", "build s", "size MB", "max rel err", "top-1", "note"):
        t.add_column(col, no_wrap=col == "engine",
                     justify="right" if col in ("build s", "size MB", "max rel err", "top-1") else "left")
    style = {"built": "green", "cached": "cyan", "failed": "bold red"}
    for o in outcomes:
        r = o.record
        v = r.verification if r else None
        t.add_row(
            o.name, f"[{style[o.status]}]{o.status}[/]",
            f"{r.build_seconds:.1f}" if r else "-",
            f"{r.size_bytes / 2**20:.1f}" if r else "-",
            f"{v.max_rel_error:.1e}" if v else "-",
            f"{v.top1_agreement:.2f}" if v else "-",
            o.message,
        )
    console.print(t)


def failures_error(outcomes: list[Outcome]) -> AgentError | None:
    failed = [o for o in outcomes if o.status == "failed"]
    if not failed:
        return None
    detail = "; ".join(f"{o.name}: {o.message}" for o in failed)
    return AgentError(f"{len(failed)} engine(s) failed: {detail}", code=1)
