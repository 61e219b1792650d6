"""Triton python-backend model: logits in, class probabilities out (softmax).

`agent repo --classifiers` copies this file to ``<repo>/imagenet_postprocess/1/model.py``.
The ensemble's ``PROBS`` output carries ``label_filename``, so a client asks for the
top k with Triton's classification extension (``class_count``) and gets
``"<probability>:<class id>:<label>"`` strings."""

from __future__ import annotations

import triton_python_backend_utils as pb_utils  # provided by the python backend


class TritonPythonModel:
    def execute(self, requests: list) -> list:
        from agent.classify.imagenet import softmax

        return [pb_utils.InferenceResponse([pb_utils.Tensor(
                    "PROBS", softmax(pb_utils.get_input_tensor_by_name(r, "LOGITS").as_numpy()))])
                for r in requests]
