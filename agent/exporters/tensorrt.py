"""TensorRT: ONNX -> serialized plan with the real ``tensorrt`` Python API.

Explicit-batch network from the ONNX parser, one optimization profile
``1 .. opt .. max_batch``, FP16 when asked and the GPU has fast FP16, a
workspace limit via ``set_memory_pool_limit``, and a timing cache file reused
between builds (per TensorRT version and compute capability). Runs only where
``tensorrt`` imports and CUDA is present; the plan is tied to both, which the
manifest records (``tools.tensorrt``, ``tools.gpu_compute_capability``)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from agent.exporters import (FILENAMES, ExportError, Exported, ExportOptions, io_specs)
from agent.fsutil import atomic_path
from agent.registry import ModelSpec

if TYPE_CHECKING:  # checked against tensorrt-stubs by mypy (tests/test_tensorrt_types.py)
    import tensorrt


def _logger() -> "tensorrt.Logger":
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def export_tensorrt(model: torch.nn.Module, spec: ModelSpec, out_dir: Path,
                    opts: ExportOptions) -> Exported:
    from agent.exporters.onnx import export_onnx

    with tempfile.TemporaryDirectory(prefix=".tmp-trt-onnx-") as scratch:
        # FP32 ONNX is the source; TensorRT lowers precision itself with the FP16 flag.
        src = export_onnx(model, spec, Path(scratch),
                          ExportOptions(max_batch=opts.max_batch, precision="fp32",
                                        opset=opts.opset, onnx_exporter=opts.onnx_exporter))
        onnx_path = Path(scratch) / FILENAMES["onnx"]
        plan = build_plan(onnx_path, spec, opts)
    (out_dir / FILENAMES["tensorrt"]).write_bytes(plan)
    inputs, outputs = io_specs("tensorrt", spec)
    return Exported(inputs=inputs, outputs=outputs, opset=src.opset, device="cuda")


def build_plan(onnx_path: Path, spec: ModelSpec, opts: ExportOptions) -> bytes:
    import tensorrt as trt

    logger = _logger()
    builder = trt.Builder(logger)
    flags = 0
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    if explicit is not None:  # TensorRT < 10 needs it; 10+ is always explicit-batch
        flags |= 1 << int(explicit)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT ONNX parser failed: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mb << 20)
    if opts.precision == "fp16":
        if not getattr(builder, "platform_has_fast_fp16", True):
            raise ExportError("FP16 asked but this GPU has no fast FP16 (platform_has_fast_fp16 is False)")
        config.set_flag(trt.BuilderFlag.FP16)

    c, h, w = spec.input_shape
    opt = max(1, min(8, opts.max_batch))
    profile = builder.create_optimization_profile()
    profile.set_shape("input", trt.Dims([1, c, h, w]), trt.Dims([opt, c, h, w]),
                      trt.Dims([opts.max_batch, c, h, w]))
    config.add_optimization_profile(profile)

    cache_path = opts.timing_cache
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    if not config.set_timing_cache(cache, ignore_mismatch=True):
        cache = config.create_timing_cache(b"")  # stale cache from another version: start over
        config.set_timing_cache(cache, ignore_mismatch=True)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError("TensorRT build_serialized_network returned None (see the worker log)")
    if cache_path is not None:
        with atomic_path(cache_path) as tmp:
            tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
    return bytes(memoryview(serialized))
