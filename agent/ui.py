"""Terminal output: one Rich console for results (stdout) and one for
progress and errors (stderr), plus the progress bar every long job uses."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.progress import TimeElapsedColumn

console = Console()
console_err = Console(stderr=True)


def progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console_err,
        transient=False,
    )


def parse_csv(value: str | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    if not value:
        return []
    return [x.strip() for x in value.split(",") if x.strip()]


def parse_ints(value: str | None, what: str) -> list[int]:
    from agent.errors import AgentError

    out = []
    for x in parse_csv(value):
        try:
            n = int(x)
        except ValueError:
            raise AgentError(f"{what} must be comma-separated integers, got {x!r}") from None
        if n < 1:
            raise AgentError(f"{what} must be >= 1, got {n}")
        out.append(n)
    return out


def deprecated_alias(value, old_value, old: str, new: str):
    """The value of an option given under its deprecated spelling ``old`` (a hidden
    option kept for one release), with a warning naming ``new``; else ``value``."""
    if old_value is None:
        return value
    _deprecated(old, new)
    return old_value


def deprecated_value(value: str, aliases: dict[str, str], option: str) -> str:
    """``aliases[value]`` for a value's deprecated name (with a warning), else ``value``."""
    new = aliases.get(value)
    if new is None:
        return value
    _deprecated(f"{option} {value}", f"{option} {new}")
    return new


def _deprecated(old: str, new: str) -> None:
    console_err.print(f"[yellow]warning:[/] {old} is deprecated and will be removed in the next release: "
                      f"use {new}", highlight=False, soft_wrap=True)
