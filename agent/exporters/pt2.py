"""PyTorch 2 engine: ``torch.export`` + AOTInductor, packaged as ``model.pt2``.

The model is exported with a dynamic batch axis (1 .. max_batch) and compiled
ahead of time by Inductor into a shared library inside a ``.pt2`` package
(``torch._inductor.aoti_compile_and_package``) — C++ on the CPU, Triton/CUDA
kernels on a GPU — that ``torch._inductor.aoti_load_package`` runs without
Python tracing or TorchScript (deprecated in torch 2.14). The package is tied
to the torch version and, on CUDA, to the GPU's architecture; the manifest
records both. fp32 compiles for the CPU, fp16 for CUDA (as every format here)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from agent.exporters import FILENAMES, ExportError, Exported, ExportOptions, io_specs, prepare_model
from agent.registry import ModelSpec


def export_pt2(model: torch.nn.Module, spec: ModelSpec, out_dir: Path, opts: ExportOptions) -> Exported:
    module, device = prepare_model(model, opts.precision)
    example = torch.randn(min(2, opts.max_batch), *spec.input_shape, device=device)
    # max_batch 1 cannot be dynamic in torch.export (min 1 = max 1): a static batch then
    dynamic = ({0: torch.export.Dim("batch", min=1, max=opts.max_batch)},) if opts.max_batch > 1 else None
    target = out_dir / FILENAMES["pt2"]
    try:
        with torch.no_grad():
            program = torch.export.export(module, (example,), dynamic_shapes=dynamic)
            # Inductor's compile cache would outlive the build; keep it beside the build's temp files
            with tempfile.TemporaryDirectory(prefix=".tmp-inductor-", dir=out_dir) as cache:
                old = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
                try:
                    torch._inductor.aoti_compile_and_package(program, package_path=str(target))
                finally:
                    if old is None:
                        os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
                    else:
                        os.environ["TORCHINDUCTOR_CACHE_DIR"] = old
    except Exception as e:
        raise ExportError(f"torch.export / AOTInductor failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}") from e
    inputs, outputs = io_specs("pt2", spec)
    return Exported(inputs=inputs, outputs=outputs, opset=None, device=device)
