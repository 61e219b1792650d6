"""Triton python-backend model: runs one agent engine (ONNX or TorchScript) on the CPU.

`agent repo --backend python` copies this file to ``<repo>/<name>/1/model.py``
next to the engine files and ``engine.json`` (the engine's manifest record with
file paths relative to the version directory). The engine is loaded through
``agent.runtimes.load_runner`` — the same code the in-process benchmark and the
verification use — so the served output equals the in-process one.

Requests that the dynamic batcher groups are concatenated into one batch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the python backend


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        from agent.runtimes import load_runner
        from agent.schema import EngineRecord

        version_dir = Path(args["model_repository"]) / args["model_version"]
        record = EngineRecord.model_validate_json((version_dir / "engine.json").read_text())
        self.name = record.name
        self.runner = load_runner(record, version_dir, device="cpu")
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        out = config["output"][0]
        self.output_name = out["name"]
        self.output_dtype = pb_utils.triton_string_to_numpy(out["data_type"])

    def execute(self, requests: list) -> list:
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        sizes = [a.shape[0] for a in arrays]
        try:
            batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
            out = np.asarray(self.runner(batch))
        except Exception as e:  # reported to the client, the model keeps serving
            err = pb_utils.TritonError(f"{self.name}: {type(e).__name__}: {e}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=err) for _ in requests]
        responses = []
        offset = 0
        for n in sizes:
            part = np.ascontiguousarray(out[offset:offset + n], dtype=self.output_dtype)
            offset += n
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, part)]))
        return responses

    def finalize(self) -> None:
        self.runner = None
