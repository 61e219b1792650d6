"""The image classification service in the Triton repository (``agent repo --classifiers``).

For every model with a served fp32 engine, three models beside the engine:

    <model>_preprocess/     python backend: IMAGE (encoded bytes) -> INPUT (the weights' preprocessing)
    imagenet_postprocess/   python backend, shared: LOGITS -> PROBS (softmax)
    <model>_classifier/     ensemble: preprocess -> the engine -> postprocess; PROBS carries
                            label_filename labels.txt (the weights' 1000 class names), so
                            clients ask for the top k with Triton's classification extension

The engine behind a classifier is the fastest verified one the repository serves:
TensorRT, then ONNX, then TorchScript. Each model is a :class:`ExtraModel` that
:func:`agent.triton.repo.write_repository` stages, checks and marks like the
engines' models (``inferfleet.json`` with the sha256 of every file)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from agent.schema import EngineRecord

PREFERENCE = ("tensorrt", "onnx", "torchscript")
POSTPROCESS = "imagenet_postprocess"
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class ExtraModel:
    """A repository model that is not an engine: its files (path in the model directory -> bytes)."""

    name: str
    files: dict[str, bytes]

    @property
    def repo_files(self) -> dict[str, str]:
        return {rel: hashlib.sha256(data).hexdigest() for rel, data in sorted(self.files.items())
                if rel != "config.pbtxt"}

    @property
    def marker(self) -> dict:
        return {"extra_model": self.name, "config": self.files["config.pbtxt"].decode(),
                "repo_files": self.repo_files}


def classifier_name(model: str) -> str:
    return f"{model}_classifier"


def pick_engines(records: list[EngineRecord]) -> dict[str, EngineRecord]:
    """model -> the engine its classifier uses (fp32, float32 input, by PREFERENCE)."""
    best: dict[str, EngineRecord] = {}
    for r in records:
        if r.precision != "fp32" or r.inputs[0].dtype != "float32" or r.format not in PREFERENCE:
            continue
        cur = best.get(r.model)
        if cur is None or PREFERENCE.index(r.format) < PREFERENCE.index(cur.format):
            best[r.model] = r
    return best


def classifier_models(records: list[EngineRecord], instances: int = 1) -> list[ExtraModel]:
    from agent.classify.imagenet import Preprocessing
    from agent.registry import LABELS_FILE, NUM_CLASSES
    from agent.templating import render

    engines = pick_engines(records)
    if not engines:
        return []
    labels = LABELS_FILE.read_bytes()
    out: list[ExtraModel] = []
    for model, engine in sorted(engines.items()):
        common = dict(engine=engine, model=model, max_batch_size=engine.max_batch, num_classes=NUM_CLASSES,
                      instances=instances)
        pre = render("triton/classifier.pbtxt.j2", role="preprocess", model_name=f"{model}_preprocess",
                     input_dims=engine.inputs[0].shape[1:],
                     preprocessing=Preprocessing.of(model).to_json(), **common)
        out.append(ExtraModel(f"{model}_preprocess", {
            "config.pbtxt": pre.encode(), "1/model.py": (HERE / "preprocess_model.py").read_bytes()}))
        ens = render("triton/classifier.pbtxt.j2", role="ensemble", model_name=classifier_name(model),
                     preprocessing="", input_dims=[], **common)
        out.append(ExtraModel(classifier_name(model), {"config.pbtxt": ens.encode(), "labels.txt": labels}))
    post = render("triton/classifier.pbtxt.j2", role="postprocess", model_name=POSTPROCESS, engine=None, model="",
                  max_batch_size=max(e.max_batch for e in engines.values()), num_classes=NUM_CLASSES,
                  instances=1, preprocessing="", input_dims=[])
    out.append(ExtraModel(POSTPROCESS, {"config.pbtxt": post.encode(),
                                        "1/model.py": (HERE / "postprocess_model.py").read_bytes()}))
    return out
