"""Triton python-backend model: encoded images in, one model's input tensors out.

`agent repo --classifiers` copies this file to ``<repo>/<model>_preprocess/1/model.py``;
the weights' preprocessing (resize, crop, mean, std) is the config parameter
``preprocessing``. Each request's ``IMAGE`` tensor ([batch, 1] BYTES: JPEG/PNG bytes,
or base64 text of them) becomes ``INPUT`` ([batch, 3, crop, crop] FP32) through
``agent.classify.imagenet.preprocess`` — the code ``agent classify --local`` runs.
An image that cannot be decoded fails its request only, with the reason."""

from __future__ import annotations

import json

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the python backend


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        from agent.classify.imagenet import Preprocessing

        config = json.loads(args["model_config"])
        self.prep = Preprocessing.from_json(config["parameters"]["preprocessing"]["string_value"])

    def execute(self, requests: list) -> list:
        from agent.classify.imagenet import preprocess
        from agent.errors import AgentError

        responses = []
        for request in requests:
            images = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy().reshape(-1)
            try:
                batch = np.stack([preprocess(bytes(image), self.prep) for image in images])
            except AgentError as e:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e))))
                continue
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("INPUT", batch)]))
        return responses
