"""Exporters: a torchvision model in, an inference engine file out.

Every exporter writes into a directory it is given (a temporary one, renamed
into place by the build only after verification ran) and returns the engine's
tensor specs. Tensor names follow the build directory contract: ONNX and
TensorRT and PyTorch 2 (``pt2``: torch.export + AOTInductor) use
``input``/``logits``; TorchScript records Triton's
``INPUT__0``/``OUTPUT__0``. The batch axis is dynamic up to ``max_batch``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from agent import defaults
from agent.errors import AgentError
from agent.schema import TensorSpec

if TYPE_CHECKING:
    import torch

    from agent.registry import ModelSpec

FORMATS: tuple[str, ...] = ("torchscript", "onnx", "tensorrt", "pt2")
DEFAULT_FORMATS: tuple[str, ...] = defaults.ENGINE_FORMATS
PRECISIONS: tuple[str, ...] = ("fp32", "fp16")
FILENAMES = {"torchscript": "model.pt", "onnx": "model.onnx", "tensorrt": "model.plan", "pt2": "model.pt2"}
# Bump when an exporter's output changes for the same inputs: it is part of the build key.
EXPORTER_VERSIONS = {"torchscript": "1", "onnx": "1", "tensorrt": "1", "pt2": "1"}
DEFAULT_OPSET = defaults.ONNX_OPSET
ONNX_EXPORTERS = ("legacy", "dynamo")


class ExportError(Exception):
    """An engine could not be produced (the build records it as failed)."""


class ExportOptions(BaseModel):
    """What every exporter is given (crosses to the build worker inside its WorkerJob)."""

    model_config = ConfigDict(frozen=True)

    max_batch: int = defaults.MAX_BATCH
    precision: str = "fp32"
    opset: int = DEFAULT_OPSET
    onnx_exporter: str = "legacy"
    workspace_mb: int = 2048
    timing_cache: Path | None = None  # TensorRT timing cache reused between builds


@dataclass
class Exported:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    opset: int | None
    device: str  # where the engine runs: "cpu" (portable) or "cuda"


def io_specs(fmt: str, spec: ModelSpec) -> tuple[list[TensorSpec], list[TensorSpec]]:
    in_name, out_name = ("INPUT__0", "OUTPUT__0") if fmt == "torchscript" else ("input", "logits")
    return (
        [TensorSpec(name=in_name, dtype="float32", shape=[-1, *spec.input_shape])],
        [TensorSpec(name=out_name, dtype="float32", shape=[-1, spec.num_classes])],
    )


def tensorrt_status() -> tuple[bool, str]:
    """(available, one-line reason) — TensorRT needs the ``tensorrt`` module and a CUDA GPU."""
    try:
        import tensorrt
    except Exception as e:  # ImportError, or a broken install raising OSError
        return False, f"the tensorrt Python module does not import on this node ({type(e).__name__}: {e})"
    if not hasattr(tensorrt, "Builder"):  # e.g. only tensorrt-stubs' .pyi files: a namespace package
        return False, "the tensorrt module found has no Builder (type stubs or a broken install, not TensorRT)"
    import torch

    if not torch.cuda.is_available():
        return False, "tensorrt imports but torch sees no CUDA GPU on this node"
    return True, "tensorrt available"


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def check_supported(fmt: str, precision: str) -> None:
    """Raise AgentError when this node cannot build ``fmt`` at ``precision`` at all."""
    if fmt == "tensorrt":
        ok, why = tensorrt_status()
        if not ok:
            raise AgentError(f"--formats tensorrt: {why}; TensorRT engines are built on GPU nodes")
    elif precision == "fp16" and not cuda_available():
        raise AgentError(f"--precision fp16 for {fmt} needs a CUDA GPU and this node has none "
                         "(fp16 on the CPU is not supported); use fp32 here")


def prepare_model(model: torch.nn.Module, precision: str) -> tuple[torch.nn.Module, str]:
    """The module to export and its device: fp32 on the CPU (portable engine), fp16 on
    CUDA with float32 in/out casts so the I/O contract (float32) holds for every engine."""
    import torch

    if precision == "fp32":
        return model.float().cpu().eval(), "cpu"

    class HalfWrapper(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner.half()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x.half()).float()

    return HalfWrapper(model).cuda().eval(), "cuda"


def export(fmt: str, model: torch.nn.Module, spec: ModelSpec, out_dir: Path,
           opts: ExportOptions) -> Exported:
    """Write the engine for ``fmt`` into ``out_dir`` (which must exist)."""
    if fmt == "torchscript":
        from agent.exporters.torchscript import export_torchscript as fn
    elif fmt == "onnx":
        from agent.exporters.onnx import export_onnx as fn
    elif fmt == "tensorrt":
        from agent.exporters.tensorrt import export_tensorrt as fn
    elif fmt == "pt2":
        from agent.exporters.pt2 import export_pt2 as fn
    else:
        raise AgentError(f"unknown format {fmt!r}")
    return fn(model, spec, out_dir, opts)
