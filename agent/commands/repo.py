"""``agent repo``: write a Triton model repository from an engine build directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agent.errors import AgentError
from agent.ui import deprecated_alias, parse_csv, parse_ints

DEFAULT_ENGINES = Path("engines")


def default_repo(engines: Path) -> Path:
    return Path(engines) / "triton-repo"


def repo(
    engines: Annotated[Path, typer.Option("--engines", help="Build directory with manifest.json.")] = DEFAULT_ENGINES,
    repo_dir: Annotated[Path | None, typer.Option("--repo", help="Repository to write (default: <engines>/triton-repo).")] = None,
    backend: Annotated[str, typer.Option(help="python (CPU, the bundled tritonserver) or native (NGC image: onnxruntime_onnx / pytorch_libtorch / tensorrt_plan).")] = "python",
    models: Annotated[str, typer.Option(help="Comma-separated models (default: all).")] = "",
    formats: Annotated[str, typer.Option(help="Comma-separated formats (default: all).")] = "",
    kind: Annotated[str, typer.Option(help="Instance kind: auto (GPU for native, CPU for python), gpu or cpu.")] = "auto",
    instances: Annotated[int, typer.Option(help="Model instances per device.")] = 1,
    dynamic_batching: Annotated[bool, typer.Option("--dynamic-batching/--no-dynamic-batching")] = True,
    queue_delay_us: Annotated[int, typer.Option("--queue-delay-us", help="Dynamic batcher max queue delay.")] = 100,
    preferred: Annotated[str, typer.Option("--preferred-batch-sizes", help="Default: 4,8,16,32 up to each engine's max batch.")] = "",
    classifiers: Annotated[bool, typer.Option("--classifiers/--no-classifiers", help="Also an image classifier per model: <model>_classifier (ensemble: JPEG/PNG bytes -> preprocessing -> engine -> softmax with ImageNet labels).")] = False,
    old_out: Annotated[Path | None, typer.Option("--out", hidden=True)] = None,
) -> None:
    """Write a Triton model repository (one model per verified engine) from a manifest."""
    from rich.table import Table

    from agent.triton.repo import RepoOptions, write_repository
    from agent.ui import console

    engines = deprecated_alias(engines, old_out, "--out", "--engines")
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


def write_repo_for_build(engines: Path, repo_dir: Path | None, backend: str = "auto", classifiers: bool = False) -> None:
    """The repository step of ``agent build-engines`` (one summary line)."""
    from agent.triton.repo import RepoOptions, write_repository
    from agent.ui import console

    if backend == "auto":
        from agent.facts import gpu_facts  # not torch: a no-op build must not pay its import

        backend = "native" if gpu_facts() else "python"
    if not (Path(engines) / "manifest.json").is_file():
        return  # nothing was built
    report = write_repository(engines, repo_dir or default_repo(engines),
                              RepoOptions(backend=backend, classifiers=classifiers))
    skipped = f", skipped {', '.join(sorted(report.skipped))}" if report.skipped else ""
    console.print(f"Triton repository {report.repo} ({backend} backend): {len(report.models)} model(s)"
                  f" — written {len(report.written)}, unchanged {len(report.unchanged)}{skipped}")
