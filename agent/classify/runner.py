"""An engine behind its image preprocessing: what ``agent bench --input images``
measures in-process (decode + resize + crop + normalise with
:mod:`agent.classify.imagenet`, then the engine), beside the served
``<model>_classifier`` ensemble that does the same inside Triton."""

from __future__ import annotations

from typing import Any

import numpy as np

from agent.classify.imagenet import Preprocessing, image_batch, preprocess
from agent.runners import Runner


class ImageRunner(Runner):
    """``prepare(x)`` turns a tensor batch's size into that many encoded images; ``infer``
    preprocesses them and runs the engine: the timed request includes the preprocessing."""

    def __init__(self, engine: Runner, model: str, images: list[bytes]) -> None:
        super().__init__(engine.name, engine.max_batch, engine.input_shape)
        self.engine, self.images, self.prep = engine, images, Preprocessing.of(model)
        self.format, self.device = engine.format, engine.device

    def prepare(self, x: np.ndarray) -> Any:
        return image_batch(self.images, len(x))

    def infer(self, prepared: Any) -> Any:
        batch = np.stack([preprocess(b, self.prep) for b in prepared.reshape(-1)])
        return self.engine.infer(self.engine.prepare(batch))

    def to_numpy(self, out: Any) -> np.ndarray:
        return self.engine.to_numpy(out)
