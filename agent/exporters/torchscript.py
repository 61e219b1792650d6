"""TorchScript by tracing (what Triton's ``pytorch_libtorch`` backend loads)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from agent.exporters import FILENAMES, ExportError, Exported, ExportOptions, io_specs, prepare_model
from agent.registry import ModelSpec


def export_torchscript(model: torch.nn.Module, spec: ModelSpec, out_dir: Path,
                       opts: ExportOptions) -> Exported:
    module, device = prepare_model(model, opts.precision)
    # trace at batch 2 so no size-1 batch specialisation sneaks into the graph
    example = torch.randn(min(2, opts.max_batch), *spec.input_shape, device=device)
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module, example, check_trace=False)
            traced = torch.jit.freeze(traced.eval())
        traced.save(str(out_dir / FILENAMES["torchscript"]))
    except Exception as e:
        raise ExportError(f"torch.jit.trace failed: {type(e).__name__}: {e}") from e
    inputs, outputs = io_specs("torchscript", spec)
    return Exported(inputs=inputs, outputs=outputs, opset=None, device=device)
