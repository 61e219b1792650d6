#!/usr/bin/env python3
"""Regenerate agent/models.json — the seed models' static facts — from torchvision.

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

from agent.registry import DATA_FILE, NUM_CLASSES, SEED_MODELS, family  # noqa: E402


def spec(name: str) -> dict:
    from torchvision.models import get_model_weights

    w = get_model_weights(name).DEFAULT
    meta = w.meta
    crop = int(getattr(w.transforms(), "crop_size", [224])[0])
    return {
        "name": name,
        "family": family(name),
        "input_shape": [3, crop, crop],
        "num_classes": len(meta.get("categories") or []) or NUM_CLASSES,
        "params": meta.get("num_params"),
        "gflops": meta.get("_ops"),
        "weights_mb": meta.get("_file_size"),
        "weights": str(w),
    }


def render() -> str:
    import torchvision

    head = {"generated_from": f"torchvision {torchvision.__version__.split('+')[0]}",
            "generator": "scripts/gen_model_registry.py"}
    rows = ",\n".join("  " + json.dumps(spec(n)) for n in SEED_MODELS)
    return json.dumps(head, indent=1)[:-2] + ',\n "models": [\n' + rows + "\n ]\n}\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        if DATA_FILE.read_text() != text:
            print(f"{DATA_FILE} is stale: run scripts/gen_model_registry.py", file=sys.stderr)
            return 1
        return 0
    DATA_FILE.write_text(text)
    print(f"wrote {DATA_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
