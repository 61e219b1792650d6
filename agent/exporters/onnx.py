"""ONNX with a dynamic batch axis (input ``input``, output ``logits``).

Two exporters: the TorchScript-based one (``legacy``, default: about 25x faster
here and one self-contained file for these models) with ``dynamic_axes``, and
the ``dynamo`` one (needs onnxscript; writes ``model.onnx.data`` external
weights) with ``dynamic_shapes``. The opset actually written is read back from
the file and recorded."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from agent.exporters import FILENAMES, ExportError, Exported, ExportOptions, io_specs, prepare_model
from agent.registry import ModelSpec


def export_onnx(model: torch.nn.Module, spec: ModelSpec, out_dir: Path,
                opts: ExportOptions) -> Exported:
    import onnx

    module, device = prepare_model(model, opts.precision)
    path = out_dir / FILENAMES["onnx"]
    example = torch.randn(min(2, opts.max_batch), *spec.input_shape, device=device)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if opts.onnx_exporter == "dynamo":
                batch = torch.export.Dim("batch", min=1, max=max(2, opts.max_batch))
                torch.onnx.export(
                    module, (example,), str(path), input_names=["input"],
                    output_names=["logits"], opset_version=opts.opset,
                    dynamic_shapes={"x": {0: batch}}, dynamo=True, verbose=False,
                )
            else:
                torch.onnx.export(
                    module, (example,), str(path), input_names=["input"],
                    output_names=["logits"], opset_version=opts.opset,
                    dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                    dynamo=False,
                )
        onnx.checker.check_model(str(path))
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ExportError(f"ONNX export ({opts.onnx_exporter}) failed: {type(e).__name__}: {e}") from e
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    inputs, outputs = io_specs("onnx", spec)
    return Exported(inputs=inputs, outputs=outputs, opset=opset, device=device)
