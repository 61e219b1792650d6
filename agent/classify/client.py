"""Classify encoded images: through a node's Triton ensemble (tritonclient, HTTP or
gRPC, Triton's classification extension for the top k) or in-process (the same
preprocessing, the engine through ``agent.runners``, the same softmax)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.classify.imagenet import image_batch, parse_classification, softmax, top_k
from agent.errors import AgentError

Top = list[tuple[str, int, float]]  # (label, class id, probability), best first


def classify_served(images: list[bytes], model: str, url: str, protocol: str, k: int) -> list[Top]:
    from agent.triton.classifier import classifier_name
    from agent.triton.client import call, connect, protocol_module

    mod = protocol_module(protocol)
    client = connect(url, protocol)
    name = classifier_name(model)
    try:
        if not call(f"readiness of {name}", client.is_model_ready, name):
            raise AgentError(f"the server at {url} does not serve {name} "
                             "(write it with `agent repo --classifiers`, then `agent serve reload`)")
        out = []
        for data in images:  # one request per image: a bad image fails alone, with its reason
            inp = mod.InferInput("IMAGE", [1, 1], "BYTES")
            inp.set_data_from_numpy(np.array([[data]], dtype=np.object_))
            want = mod.InferRequestedOutput("PROBS", class_count=k)
            res = call(f"classification by {name}", client.infer, name, [inp], outputs=[want])
            out.append(parse_classification(res.as_numpy("PROBS").reshape(-1)))
        return out
    finally:
        client.close()


def classify_local(images: list[bytes], model: str, engines: Path, k: int) -> list[Top]:
    from agent.build.manifest import load_manifest
    from agent.registry import imagenet_labels
    from agent.runners import load_runner
    from agent.triton.classifier import pick_engines

    record = pick_engines([r for r in load_manifest(engines, missing_ok=False).engines.values()
                           if r.model == model and r.ok and r.format != "tensorrt"]).get(model)
    if record is None:
        raise AgentError(f"no verified fp32 engine of {model} in {engines}: "
                         f"`agent build-engines --models {model} --engines {engines}`")
    from agent.classify.runner import ImageRunner

    runner = ImageRunner(load_runner(record, engines, device="cpu"), model, images)
    labels = imagenet_labels()
    return [top_k(softmax(runner.to_numpy(runner.infer(image_batch([data], 1))))[0], k, labels)
            for data in images]
