"""The ONE place that loads and runs an engine (and the eager baseline).

``load_runner(record, engines_dir, device)`` checks the engine's files against
the manifest hashes, loads it with its runtime (TorchScript, ONNX Runtime,
TensorRT) and returns a :class:`Runner`: ``runner(x: np.ndarray) -> np.ndarray``
(float32 batch in, float32 logits out). For benchmarking, ``prepare`` puts a
batch where the runtime wants it (e.g. on the GPU) and ``infer`` runs it and
waits for the result (CUDA synchronised), so timings exclude the host copy of
the input but include the run itself."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from agent.errors import AgentError
from agent.schema import EngineRecord


class Runner:
    format: str = ""
    device: str = "cpu"

    def __init__(self, name: str, max_batch: int | None, input_shape: tuple[int, ...]) -> None:
        self.name = name
        self.max_batch = max_batch
        self.input_shape = tuple(input_shape)

    def check_batch(self, batch: int) -> None:
        if self.max_batch is not None and batch > self.max_batch:
            raise AgentError(f"batch size {batch} is above {self.name}'s max batch "
                             f"{self.max_batch}; rebuild with --max-batch {batch}")

    def prepare(self, x: np.ndarray) -> Any:
        return x

    def infer(self, prepared: Any) -> Any:
        raise NotImplementedError

    def to_numpy(self, out: Any) -> np.ndarray:
        return np.asarray(out, dtype=np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise AgentError(f"{self.name}: input shape {list(x.shape)} does not match "
                             f"[N, {', '.join(map(str, self.input_shape))}]")
        self.check_batch(x.shape[0])
        return self.to_numpy(self.infer(self.prepare(x)))


class TorchRunner(Runner):
    """Eager PyTorch, a TorchScript module or an AOTInductor package (pt2): anything callable on a tensor."""

    def __init__(self, module, name: str, max_batch: int | None, input_shape, device: str,
                 half: bool = False, fmt: str = "eager") -> None:
        super().__init__(name, max_batch, input_shape)
        import torch

        self.torch = torch
        self.module = module
        self.device = device
        self.half = half
        self.format = fmt

    def prepare(self, x: np.ndarray):
        t = self.torch.from_numpy(x).to(self.device)
        return t.half() if self.half else t

    def infer(self, prepared):
        with self.torch.inference_mode():
            out = self.module(prepared)
        if self.device == "cuda":
            self.torch.cuda.synchronize()
        return out

    def to_numpy(self, out) -> np.ndarray:
        return out.float().cpu().numpy()


class OnnxRunner(Runner):
    format = "onnx"

    def __init__(self, path: Path, name: str, max_batch: int | None, input_shape,
                 device: str) -> None:
        super().__init__(name, max_batch, input_shape)
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise AgentError(f"{name}: onnxruntime on this node has no CUDAExecutionProvider "
                                 "(install onnxruntime-gpu) — run it with device cpu")
            providers.insert(0, "CUDAExecutionProvider")
        self.device = device
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # ONNX Runtime's pool spins between runs like OpenMP's: it follows the same policy
        # (agent/__init__.py: passive unless OMP_WAIT_POLICY=ACTIVE), as the served model does
        spin = "1" if os.environ.get("OMP_WAIT_POLICY", "").upper() == "ACTIVE" else "0"
        opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        self.input_name = self.session.get_inputs()[0].name

    def infer(self, prepared):
        return self.session.run(None, {self.input_name: prepared})[0]


class TensorRTRunner(Runner):
    format = "tensorrt"
    device = "cuda"

    def __init__(self, path: Path, name: str, max_batch: int | None, input_shape) -> None:
        super().__init__(name, max_batch, input_shape)
        import tensorrt as trt
        import torch

        self.torch = torch
        self.trt_logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.trt_logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise AgentError(f"{name}: TensorRT could not deserialize {path.name} "
                             "(built by another TensorRT version or GPU?) — rebuild it")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()

    def prepare(self, x: np.ndarray):
        return self.torch.from_numpy(x).cuda()

    def infer(self, prepared):
        torch = self.torch
        self.context.set_input_shape("input", tuple(prepared.shape))
        out = torch.empty(tuple(self.context.get_tensor_shape("logits")), dtype=torch.float32,
                          device="cuda")
        self.context.set_tensor_address("input", prepared.data_ptr())
        self.context.set_tensor_address("logits", out.data_ptr())
        torch.cuda.current_stream().synchronize()
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise AgentError(f"{self.name}: TensorRT execution failed")
        self.stream.synchronize()
        return out

    def to_numpy(self, out) -> np.ndarray:
        return out.cpu().numpy()


def check_files(record: EngineRecord, engines_dir: Path) -> str | None:
    """None when every file of the engine exists with its recorded sha256, else why not."""
    from agent.build.manifest import check_file_hashes

    return check_file_hashes(record.files, engines_dir)


def _main_file(record: EngineRecord, engines_dir: Path) -> Path:
    from agent.exporters import FILENAMES

    want = FILENAMES[record.format]
    for rel in record.files:
        if Path(rel).name == want:
            return Path(engines_dir) / rel
    raise AgentError(f"engine {record.name}: manifest lists no {want}")


def load_runner(record: EngineRecord, engines_dir: Path, device: str = "cpu",
                check_hashes: bool = True) -> Runner:
    """Load a built engine; AgentError (one line) when it is corrupt or cannot run here."""
    if check_hashes:
        problem = check_files(record, engines_dir)
        if problem:
            raise AgentError(f"engine {record.name} in {engines_dir}: {problem}; "
                             "rerun `agent build-engines` to rebuild it")
    path = _main_file(record, engines_dir)
    shape = tuple(record.inputs[0].shape[1:])
    if record.format == "tensorrt" or record.device == "cuda":
        device = "cuda"
    if record.format == "pt2":
        device = record.device  # compiled for one device: C++ for the CPU or kernels for CUDA
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise AgentError(f"engine {record.name} needs a CUDA GPU and this node has none")
    try:
        if record.format == "torchscript":
            import warnings

            import torch

            with warnings.catch_warnings():  # "TorchScript is deprecated": still served by Triton
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(str(path), map_location=device).eval()
            return TorchRunner(module, record.name, record.max_batch, shape, device,
                               fmt="torchscript")
        if record.format == "onnx":
            return OnnxRunner(path, record.name, record.max_batch, shape, device)
        if record.format == "pt2":
            import torch

            with _quiet_inductor():
                package = torch._inductor.aoti_load_package(str(path))
            return TorchRunner(package, record.name, record.max_batch, shape, device, fmt="pt2")
        if record.format == "tensorrt":
            return TensorRTRunner(path, record.name, record.max_batch, shape)
    except AgentError:
        raise
    except Exception as e:
        msg = " ".join(str(e).split())[:300]
        raise AgentError(f"engine {record.name}: cannot load {path.name}: "
                         f"{type(e).__name__}: {msg}") from e
    raise AgentError(f"engine {record.name}: unknown format {record.format!r}")


def _quiet_inductor():  # noqa: ANN202
    """AOTInductor's loader logs a CUDA_HOME warning on CPU-only nodes: not ours to show."""
    import contextlib
    import logging

    @contextlib.contextmanager
    def quiet():
        log = logging.getLogger("torch.utils.cpp_extension")
        level = log.level
        log.setLevel(logging.ERROR)
        try:
            yield
        finally:
            log.setLevel(level)

    return quiet()


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def eager_runner(model_name: str, pretrained: bool = False, precision: str = "fp32",
                 device: str | None = None, max_batch: int | None = None) -> Runner:
    """Eager PyTorch with the same (seeded) weights the engines were exported from."""
    from agent import registry

    spec = registry.get(model_name)
    device = device or default_device()
    half = precision == "fp16"
    if half and device != "cuda":
        raise AgentError("eager fp16 needs a CUDA GPU and this node has none")
    module = registry.build(model_name, pretrained=pretrained).to(device)
    if half:
        module = module.half()
    suffix = "" if precision == "fp32" else f"_{precision}"
    return TorchRunner(module, f"{model_name}_eager{suffix}", max_batch, spec.input_shape,
                       device, half=half, fmt="eager")
