"""``agent build-engines``: export, verify and record engines (see agent/build/)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agent import defaults
from agent.ui import deprecated_alias, deprecated_value, parse_csv


def build_engines(
    models: Annotated[str, typer.Option(help="Comma-separated model names (see `agent models`).")] = "",
    all_models: Annotated[bool, typer.Option("--all", help="Build every model of the registry.")] = False,
    formats: Annotated[str, typer.Option(help="torchscript,onnx,tensorrt,pt2 (default: torchscript,onnx; tensorrt only where it imports; pt2 = torch.export + AOTInductor, slow to compile).")] = ",".join(defaults.ENGINE_FORMATS),
    precision: Annotated[str, typer.Option(help="fp32,fp16 (fp16: GPU nodes).")] = "fp32",
    max_batch: Annotated[int, typer.Option("--max-batch", help="Largest batch the engines accept (dynamic batch axis 1..N).")] = defaults.MAX_BATCH,
    engines: Annotated[Path, typer.Option("--engines", help="Build directory (manifest.json + one directory per engine).")] = Path("engines"),
    pretrained: Annotated[bool, typer.Option(help="Load torchvision's ImageNet weights (needs download access); default: seeded random weights.")] = False,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = defaults.ONNX_OPSET,
    onnx_exporter: Annotated[str, typer.Option("--onnx-exporter", help="legacy (fast, default) or dynamo.")] = "legacy",
    workspace_mb: Annotated[int, typer.Option("--workspace-mb", help="TensorRT workspace limit (MiB).")] = 2048,
    timeout: Annotated[float | None, typer.Option(help="Kill a model's build worker after this many seconds.")] = None,
    repo: Annotated[Path | None, typer.Option("--repo", help="Triton model repository to write from the verified engines (default: <engines>/triton-repo; see `agent repo`).")] = None,
    triton_backend: Annotated[str, typer.Option("--triton-backend", help="Repository variant: auto (platform with a GPU, else python), python or platform.")] = "auto",
    no_repo: Annotated[bool, typer.Option("--no-repo", help="Do not write the Triton model repository.")] = False,
    classifiers: Annotated[bool, typer.Option("--classifiers/--no-classifiers", help="Also write each model's image classifier ensemble into the repository (see `agent repo --classifiers`).")] = False,
    old_out: Annotated[Path | None, typer.Option("--out", hidden=True)] = None,
) -> None:
    """Export, verify against eager PyTorch, and record engines (incremental, crash-safe)."""
    from agent import registry
    from agent.build.pipeline import BuildOptions, failures_error, print_summary, run_build
    from agent.errors import AgentError
    from agent.triton.repo import BACKEND_ALIASES, BACKENDS

    out = deprecated_alias(engines, old_out, "--out", "--engines")
    backend = deprecated_value(triton_backend, BACKEND_ALIASES, "--triton-backend")
    if backend not in ("auto", *BACKENDS):
        raise AgentError(f"unknown --triton-backend {backend!r}: use auto, python or platform")
    if all_models and parse_csv(models):
        raise AgentError("use either --models or --all, not both")
    names = registry.resolve(parse_csv(models), all_models)
    if timeout is not None and timeout <= 0:
        raise AgentError("--timeout must be > 0")
    opts = BuildOptions(models=names, out=out, formats=parse_csv(formats) or list(defaults.ENGINE_FORMATS),
                        precisions=parse_csv(precision) or ["fp32"], max_batch=max_batch,
                        pretrained=pretrained, opset=opset, onnx_exporter=onnx_exporter,
                        workspace_mb=workspace_mb, timeout_s=timeout)
    outcomes = run_build(opts)
    print_summary(outcomes)
    if not no_repo:  # serving: only verified engines enter the repository
        from agent.triton.repo import write_build_repository
        from agent.ui import console

        written = write_build_repository(out, repo, backend, classifiers=classifiers)
        if written is not None:
            report, backend = written
            skipped = f", skipped {', '.join(sorted(report.skipped))}" if report.skipped else ""
            console.print(f"Triton repository {report.repo} ({backend} backend): {len(report.models)} model(s)"
                          f" — written {len(report.written)}, unchanged {len(report.unchanged)}{skipped}")
    err = failures_error(outcomes)
    if err:
        raise err
