"""The model registry: the seed's 31 torchvision image classifiers.

Facts (parameters, GFLOPs, weight file size) come from torchvision's weight
metadata, copied into ``agent/models.json`` by ``scripts/gen_model_registry.py``
(a test keeps it equal to torchvision's): listing models or planning a build
never imports torchvision, only building one does. Models are built with
*random* weights by default, seeded per model so that every build of the same
model (the exporter, the verifier, the benchmark's eager baseline, the Triton
correctness check) has identical weights. ``pretrained=True`` loads
torchvision's ImageNet weights and fails with a clear message when the node
cannot download them."""

from __future__ import annotations

import difflib
import json
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import AgentError

if TYPE_CHECKING:
    import torch

SEED_MODELS: tuple[str, ...] = (
    "alexnet",
    "densenet121", "densenet161", "densenet169", "densenet201",
    "mnasnet0_5", "mnasnet1_0",
    "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnext50_32x4d", "resnext101_32x8d",
    "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
    "squeezenet1_0", "squeezenet1_1",
    "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
    "wide_resnet50_2", "wide_resnet101_2",
)

NUM_CLASSES = 1000
DATA_FILE = Path(__file__).with_name("models.json")
LABELS_FILE = Path(__file__).with_name("imagenet_classes.txt")  # the weights' 1000 categories, in order


def imagenet_labels() -> list[str]:
    """The ImageNet-1k class names of every seed model's weights (index = class id)."""
    labels = LABELS_FILE.read_text().splitlines()
    if len(labels) != NUM_CLASSES:
        raise AgentError(f"{LABELS_FILE} has {len(labels)} labels, not {NUM_CLASSES}: "
                         "run scripts/gen_model_registry.py")
    return labels


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    input_shape: tuple[int, int, int]  # C, H, W
    num_classes: int
    params: int | None  # parameter count
    gflops: float | None  # per 224x224 image, as torchvision reports it
    weights_mb: float | None  # size of the pretrained weight file
    weights: str  # torchvision's default weights enum, e.g. ResNet18_Weights.IMAGENET1K_V1
    # the weights' preprocessing (torchvision's ImageClassification transform): resize the
    # shorter side to resize_size (bilinear, antialiased), centre-crop input_shape[1:], scale
    # to [0, 1], normalise with mean/std
    resize_size: int = 256
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @property
    def seed(self) -> int:
        """Seed for the random weights: stable across processes and versions."""
        return zlib.crc32(self.name.encode())

    def as_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


def family(name: str) -> str:
    for prefix in ("wide_resnet", "resnext", "resnet", "densenet", "mnasnet", "mobilenet",
                   "shufflenet", "squeezenet", "vgg", "alexnet"):
        if name.startswith(prefix):
            return prefix
    return name


def _load() -> dict[str, ModelSpec]:
    try:
        rows = json.loads(DATA_FILE.read_text())["models"]
    except (OSError, ValueError, KeyError) as e:
        raise AgentError(f"the model registry {DATA_FILE} is missing or broken ({e}): "
                         "reinstall the agent or run scripts/gen_model_registry.py") from e
    specs = {r["name"]: ModelSpec(**{**r, "input_shape": tuple(r["input_shape"]), "mean": tuple(r["mean"]),
                                     "std": tuple(r["std"])}) for r in rows}
    if tuple(specs) != SEED_MODELS:
        raise AgentError(f"the model registry {DATA_FILE} does not list the seed models: "
                         "run scripts/gen_model_registry.py")
    return specs


class _Registry(dict):
    """``MODELS``: name -> ModelSpec, read from agent/models.json on first use."""

    def _fill(self) -> None:
        if not dict.__len__(self):
            dict.update(self, _load())

    def __getitem__(self, k):
        self._fill()
        return dict.__getitem__(self, k)

    def __iter__(self):
        self._fill()
        return dict.__iter__(self)

    def __len__(self):
        self._fill()
        return dict.__len__(self)

    def __contains__(self, k):
        return k in SEED_MODELS

    def keys(self):
        self._fill()
        return dict.keys(self)

    def values(self):
        self._fill()
        return dict.values(self)

    def items(self):
        self._fill()
        return dict.items(self)

    def get(self, k, default=None):  # noqa: D102 - dict protocol
        return self[k] if k in SEED_MODELS else default


MODELS: dict[str, ModelSpec] = _Registry()


def suggest(name: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def get(name: str) -> ModelSpec:
    if name not in SEED_MODELS:
        raise AgentError(f"unknown model {name!r}{suggest(name, SEED_MODELS)}; "
                         "`agent models` lists them")
    return MODELS[name]


def resolve(names: list[str], all_models: bool = False) -> list[str]:
    """Validate a --models list (every name, before any work starts)."""
    if all_models:
        return list(SEED_MODELS)
    if not names:
        raise AgentError("name the models with --models a,b or use --all")
    for n in names:
        get(n)
    return list(dict.fromkeys(names))


def build(name: str, pretrained: bool = False) -> torch.nn.Module:
    """The model in eval mode: seeded random weights, or torchvision's pretrained ones."""
    import torch
    from torchvision.models import get_model, get_model_weights

    spec = get(name)
    if pretrained:
        weights = get_model_weights(name).DEFAULT
        try:
            model = get_model(name, weights=weights)
        except Exception as e:  # URLError, HTTPError, hash mismatch, ...
            reason = " ".join(str(e).split())[:200]
            raise AgentError(
                f"cannot load pretrained weights for {name} ({weights}): {reason}; "
                "this node cannot download them — drop --pretrained to use random weights"
            ) from e
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            model = get_model(name, weights=None)
    return model.eval()
