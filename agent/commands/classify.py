"""``agent classify``: image in, ImageNet labels out — through a node's Triton or in-process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from agent.errors import AgentError


def classify(
    images: Annotated[list[Path], typer.Argument(help="JPEG/PNG files.")],
    model: Annotated[str, typer.Option(help="Model whose classifier answers (<model>_classifier on the server).")] = "resnet50",
    url: Annotated[str, typer.Option(help="Triton URL (host:port) of the node.")] = "127.0.0.1:8000",
    protocol: Annotated[str, typer.Option(help="http or grpc.")] = "http",
    top_k: Annotated[int, typer.Option("--top-k", help="Classes per image.")] = 5,
    local: Annotated[bool, typer.Option("--local", help="Run in this process (the engine from --engines, the same preprocessing) instead of Triton.")] = False,
    engines: Annotated[Path, typer.Option("--engines", help="Build directory for --local.")] = Path("engines"),
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Classify images with a model's Triton ensemble (preprocessing, engine, softmax with labels)."""
    from agent.classify.client import classify_local, classify_served
    from agent.registry import get

    get(model)
    if not 1 <= top_k <= 1000:
        raise AgentError(f"--top-k must be 1..1000, got {top_k}")
    if protocol not in ("http", "grpc"):
        raise AgentError(f"unknown --protocol {protocol!r}: use http or grpc")
    data = []
    for p in images:
        try:
            data.append(p.read_bytes())
        except OSError as e:
            raise AgentError(f"cannot read {p}: {e.strerror or e}") from None
    if local:
        results = classify_local(data, model, engines, top_k)
    else:
        results = classify_served(data, model, url, protocol, top_k)
    if json_out:
        print(json.dumps([{"image": str(p), "top": [{"label": lb, "class": i, "probability": pr}
                                                     for lb, i, pr in r]}
                          for p, r in zip(images, results, strict=True)], indent=2))
        return
    from rich.table import Table

    from agent.ui import console

    where = "in-process" if local else f"{url} ({protocol})"
    t = Table(title=f"{model} top {top_k}, {where}", title_justify="left")
    for col in ("image", "rank", "label", "class", "probability"):
        t.add_column(col, justify="right" if col in ("rank", "class", "probability") else "left")
    for p, r in zip(images, results, strict=True):
        for rank, (label, idx, prob) in enumerate(r, 1):
            t.add_row(str(p) if rank == 1 else "", str(rank), label, str(idx), f"{prob:.4f}")
    console.print(t)
