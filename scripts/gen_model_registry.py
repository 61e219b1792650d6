#!/usr/bin/env python3
"""Regenerate agent/models.json — the seed models' static facts — and
agent/imagenet_classes.txt — their weights' class names — from torchvision.

The registry reads this file instead of importing torchvision (≈5 s) to answer
`agent models` or to plan a build; tests/test_registry.py checks that the file
still equals what this script would write with the installed torchvision.

    .venv/bin/python scripts/gen_model_registry.py          # rewrite agent/models.json
    .venv/bin/python scripts/gen_model_registry.py --check  # exit 1 when it is stale
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.registry import DATA_FILE, LABELS_FILE, NUM_CLASSES, SEED_MODELS, family  # noqa: E402


def spec(name: str) -> dict:
    from torchvision.models import get_model_weights
    from torchvision.transforms import InterpolationMode

    w = get_model_weights(name).DEFAULT
    meta = w.meta
    t = w.transforms()
    crop = int(t.crop_size[0])
    # agent/classify/imagenet.py implements exactly this transform (bilinear, antialiased)
    assert t.interpolation == InterpolationMode.BILINEAR and t.antialias, (name, t)
    return {
        "name": name,
        "family": family(name),
        "input_shape": [3, crop, crop],
        "num_classes": len(meta.get("categories") or []) or NUM_CLASSES,
        "params": meta.get("num_params"),
        "gflops": meta.get("_ops"),
        "weights_mb": meta.get("_file_size"),
        "weights": str(w),
        "resize_size": int(t.resize_size[0]),
        "mean": [float(x) for x in t.mean],
        "std": [float(x) for x in t.std],
    }


def labels() -> str:
    from torchvision.models import get_model_weights

    sets = {tuple(get_model_weights(n).DEFAULT.meta["categories"]) for n in SEED_MODELS}
    assert len(sets) == 1, "the seed models' weights disagree on their class names"
    (categories,) = sets
    assert len(categories) == NUM_CLASSES
    return "\n".join(categories) + "\n"


def render() -> str:
    import torchvision

    head = {"generated_from": f"torchvision {torchvision.__version__.split('+')[0]}",
            "generator": "scripts/gen_model_registry.py"}
    rows = ",\n".join("  " + json.dumps(spec(n)) for n in SEED_MODELS)
    return json.dumps(head, indent=1)[:-2] + ',\n "models": [\n' + rows + "\n ]\n}\n"


def main() -> int:
    files = {DATA_FILE: render(), LABELS_FILE: labels()}
    if "--check" in sys.argv[1:]:
        stale = [str(f) for f, text in files.items() if not f.is_file() or f.read_text() != text]
        if stale:
            print(f"{', '.join(stale)} stale: run scripts/gen_model_registry.py", file=sys.stderr)
            return 1
        return 0
    for f, text in files.items():
        f.write_text(text)
        print(f"wrote {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
