"""``agent models``: the model registry (31 torchvision classifiers)."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def models(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    pretrained: Annotated[bool, typer.Option(help="Also load torchvision's pretrained weights of each model (needs download access).")] = False,
) -> None:
    """List the models: input shape, parameters, GFLOPs, weight size."""
    from agent import registry

    specs = list(registry.MODELS.values())
    if pretrained:  # proves the weights can be fetched on this node, or fails clearly
        from agent.ui import progress

        with progress() as p:
            task = p.add_task("loading pretrained weights", total=len(specs))
            for s in specs:
                p.update(task, description=f"loading {s.name}")
                registry.build(s.name, pretrained=True)
                p.advance(task)
    if as_json:
        print(json.dumps({"models": [s.as_dict() for s in specs],
                          "weights": "pretrained" if pretrained else "random"}, indent=2))
        return
    from rich.table import Table

    from agent.ui import console

    t = Table(title=f"{len(specs)} models ({'pretrained' if pretrained else 'random'} weights by default: "
                    "--pretrained loads ImageNet weights)", title_justify="left")
    t.add_column("model")
    t.add_column("family")
    t.add_column("input (C,H,W)")
    t.add_column("params (M)", justify="right")
    t.add_column("GFLOPs", justify="right")
    t.add_column("weights MB", justify="right")
    for s in specs:
        t.add_row(s.name, s.family, "x".join(map(str, s.input_shape)),
                  f"{s.params / 1e6:.1f}" if s.params else "-",
                  f"{s.gflops:.2f}" if s.gflops else "-",
                  f"{s.weights_mb:.1f}" if s.weights_mb else "-")
    console.print(t)
