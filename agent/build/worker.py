"""Models' engines, built in a long-lived subprocess of ``agent build-engines``.

Reads one JSON job per line from stdin (one model and its engines), writes one
line per event to stdout: ``@@start <name>``, ``@@done <json>``
(``{"name", "record", "error"}``) per engine, then ``@@model <model>`` when the
model is finished; exits at the end of stdin. torch is imported once per
worker, not once per model; a crash still costs only the model being built
(the parent starts a fresh worker for the next one).
Each engine is exported into a temporary directory, verified there against
eager PyTorch, and only then renamed into place, so a crash or a kill at any
moment leaves no directory that looks like a finished engine; the parent
writes the manifest record after the rename."""

from __future__ import annotations

import copy
import faulthandler
import gc
import json
import sys
import time
import warnings
from pathlib import Path

STDOUT = sys.stdout


def emit(kind: str, payload: str) -> None:
    STDOUT.write(f"@@{kind} {payload}\n")
    STDOUT.flush()


def build_one(model, spec, job, out: Path, opts, tools) -> dict:
    import torch

    from agent.build.manifest import engine_subdir
    from agent.build.verify import verify
    from agent.exporters import EXPORTER_VERSIONS, export  # noqa: F401
    from agent.fsutil import atomic_path, sha256_file
    from agent.runners import TorchRunner, load_runner
    from agent.schema import EngineRecord

    fmt, precision = job.format, job.precision
    sub = engine_subdir(spec.name, fmt, precision)
    t0 = time.perf_counter()
    with atomic_path(out / sub) as tmp:
        tmp.mkdir()
        exported = export(fmt, copy.deepcopy(model), spec, tmp, opts)
        build_s = time.perf_counter() - t0
        files = sorted(p for p in tmp.rglob("*") if p.is_file())

        def record_for(prefix: Path) -> EngineRecord:
            return EngineRecord(
                model=spec.name, format=fmt, precision=precision, device=exported.device,
                max_batch=opts.max_batch,
                files={str(prefix / p.relative_to(tmp)): sha256_file(p) for p in files},
                size_bytes=sum(p.stat().st_size for p in files),
                inputs=exported.inputs, outputs=exported.outputs, opset=exported.opset,
                build_seconds=round(build_s, 3), build_key=job.key, tools=tools,
            )

        # verify the temporary copy (paths relative to its parent), before it is renamed
        runner = load_runner(record_for(Path(tmp.name)), tmp.parent, device=exported.device,
                             check_hashes=False)
        ref_module = copy.deepcopy(model).float().to(exported.device).eval()
        eager = TorchRunner(ref_module, f"{spec.name}_eager", None, spec.input_shape,
                            exported.device)
        verification = verify(runner, eager, [1, opts.max_batch], precision)
        del runner, eager, ref_module
        if exported.device == "cuda":
            torch.cuda.empty_cache()
        record = record_for(sub)
        record.verification = verification
    return json.loads(record.model_dump_json())


def build_model(job) -> None:
    """All engines of one model (an ``agent.build.pipeline.WorkerJob``); one ``@@done`` per engine
    whatever happens."""
    from agent import registry
    from agent.errors import AgentError
    from agent.exporters import ExportError

    spec = registry.get(job.model)

    def done(name: str, record: dict | None, error: str | None) -> None:
        emit("done", json.dumps({"name": name, "record": record, "error": error}))

    try:
        model = registry.build(spec.name, pretrained=job.pretrained)
    except AgentError as e:
        for j in job.jobs:
            done(j.name, None, str(e))
        return
    for j in job.jobs:
        emit("start", j.name)
        try:
            done(j.name, build_one(model, spec, j, job.out, job.export.model_copy(update={"precision": j.precision}),
                                   job.tools), None)
        except (ExportError, AgentError) as e:
            done(j.name, None, str(e))
        except Exception as e:  # an exporter bug must not hide the other engines
            done(j.name, None, " ".join(f"{type(e).__name__}: {e}".split())[:400])


def main() -> int:
    faulthandler.enable()
    warnings.simplefilter("ignore")
    stdin = sys.stdin
    # anything a library prints goes to stderr (the worker log), not into the event stream
    sys.stdout = sys.stderr
    for line in stdin:
        if not line.strip():
            continue
        from agent.build.pipeline import WorkerJob

        job = WorkerJob.model_validate_json(line)
        build_model(job)
        gc.collect()
        emit("model", job.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
