"""``agent repo``: write a Triton model repository from an engine build directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agent import defaults
from agent.errors import AgentError
from agent.ui import deprecated_alias, deprecated_value, parse_csv, parse_ints

DEFAULT_ENGINES = Path("engines")


def repo(
    engines: Annotated[Path, typer.Option("--engines", help="Build directory with manifest.json.")] = DEFAULT_ENGINES,
    repo_dir: Annotated[Path | None, typer.Option("--repo", help="Repository to write (default: <engines>/triton-repo).")] = None,
    backend: Annotated[str, typer.Option(help="python (CPU, the bundled tritonserver) or platform (NGC image, Triton's own backends: onnxruntime_onnx / pytorch_libtorch / tensorrt_plan).")] = "python",
    models: Annotated[str, typer.Option(help="Comma-separated models (default: all).")] = "",
    formats: Annotated[str, typer.Option(help="Comma-separated formats (default: all).")] = "",
    kind: Annotated[str, typer.Option(help="Instance kind: auto (GPU for platform, CPU for python), gpu or cpu.")] = "auto",
    instances: Annotated[int, typer.Option(help="Model instances per device.")] = 1,
    dynamic_batching: Annotated[bool, typer.Option("--dynamic-batching/--no-dynamic-batching")] = True,
    queue_delay_us: Annotated[int, typer.Option("--queue-delay-us", help="Dynamic batcher max queue delay.")] = defaults.QUEUE_DELAY_US,
    preferred: Annotated[str, typer.Option("--preferred-batch-sizes", help=f"Default: {','.join(map(str, defaults.PREFERRED_BATCH_SIZES))} up to each engine's max batch.")] = "",
    classifiers: Annotated[bool, typer.Option("--classifiers/--no-classifiers", help="Also an image classifier per model: <model>_classifier (ensemble: JPEG/PNG bytes -> preprocessing -> engine -> softmax with ImageNet labels).")] = False,
    old_out: Annotated[Path | None, typer.Option("--out", hidden=True)] = None,
) -> None:
    """Write a Triton model repository (one model per verified engine) from a manifest."""
    from rich.table import Table

    from agent.triton.repo import BACKEND_ALIASES, RepoOptions, default_repo, write_repository
    from agent.ui import console

    engines = deprecated_alias(engines, old_out, "--out", "--engines")
    backend = deprecated_value(backend, BACKEND_ALIASES, "--backend")
    opts = RepoOptions(
        backend=backend, kind=kind, instances=instances, dynamic_batching=dynamic_batching,
        queue_delay_us=queue_delay_us,
        preferred_batch_sizes=tuple(parse_ints(preferred, "--preferred-batch-sizes")) or None,
        models=tuple(parse_csv(models)), formats=tuple(parse_csv(formats)), classifiers=classifiers,
    )
    report = write_repository(engines, repo_dir or default_repo(engines), opts)
    table = Table(title=f"Triton model repository {report.repo} ({backend} backend)")
    table.add_column("model")
    table.add_column("status")
    for name in report.written:
        table.add_row(name, "[green]written[/]")
    for name in report.unchanged:
        table.add_row(name, "unchanged")
    for name in report.removed:
        table.add_row(name, "[yellow]removed[/]")
    for name, why in sorted(report.skipped.items()):
        table.add_row(name, f"[red]skipped[/]: {why}")
    console.print(table)
    if not report.models:
        raise AgentError(f"no verified engine to serve in {engines} (the repository {report.repo} is empty)")
