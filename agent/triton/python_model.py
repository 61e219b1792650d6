"""Triton python-backend model: runs one agent engine (ONNX or TorchScript) on the CPU.

`agent repo --backend python` copies this file to ``<repo>/<name>/1/model.py``
next to the engine files and ``engine.json`` (the engine's manifest record with
file paths relative to the version directory). The engine is loaded through
``agent.runners.load_runner`` — the same code the in-process benchmark and the
verification use — so the served output equals the in-process one.

The process hop (Triton's server process -> this stub process over shared
memory) is kept to what the backend requires:

- inputs are read with ``as_numpy()``, a view of the shared-memory tensor (no
  copy), and handed to ONNX Runtime as they are (float32, C-contiguous: the
  runner's checks copy nothing); requests that the dynamic batcher groups are
  concatenated into one batch (the one copy batching needs);
- outputs are written once, into the response's shared memory;
- ONNX Runtime's intra-op threads do not spin-wait between runs
  (``ort_allow_spinning``, default 0): on a CPU node the server's HTTP/gRPC
  threads and the clients share the cores with them, and a spinning pool takes
  those cores away after every inference. ``ort_intra_op_threads`` (default 0:
  ONNX Runtime's choice, one per physical core) sets the pool size. Both are
  ``parameters`` of the model's config.pbtxt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

try:
    import triton_python_backend_utils as pb_utils  # provided by the python backend
except ImportError:  # imported outside Triton (benchmarks: the served session settings)
    pb_utils = None


def _parameter(config: dict, key: str, default: str) -> str:
    return str(config.get("parameters", {}).get(key, {}).get("string_value", default))


def onnx_session_options(config: dict | None = None):
    """ONNX Runtime session options of a served engine (``config``: the model's config)."""
    import onnxruntime as ort

    config = config or {}
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = int(_parameter(config, "ort_intra_op_threads", "0"))
    opts.add_session_config_entry("session.intra_op.allow_spinning", _parameter(config, "ort_allow_spinning", "0"))
    return opts


def use_session_options(runner, path: Path, opts) -> None:
    """Recreate an OnnxRunner's session with ``opts`` (same engine file, CPU)."""
    import onnxruntime as ort

    runner.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    runner.input_name = runner.session.get_inputs()[0].name


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        from agent.runners import load_runner
        from agent.schema import EngineRecord

        version_dir = Path(args["model_repository"]) / args["model_version"]
        record = EngineRecord.model_validate_json((version_dir / "engine.json").read_text())
        self.name = record.name
        config = json.loads(args["model_config"])
        self.runner = load_runner(record, version_dir, device="cpu")
        if record.format == "onnx":
            use_session_options(self.runner, version_dir / "model.onnx", onnx_session_options(config))
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
