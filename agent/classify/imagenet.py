"""Image in, ImageNet class out: the preprocessing and postprocessing of the
classification service, shared by the Triton models (``agent/triton/
preprocess_model.py``, ``postprocess_model.py``) and ``agent classify --local``.

Preprocessing is torchvision's ``ImageClassification`` transform of each
model's weights (resize the shorter side to ``resize_size`` with bilinear,
antialiased resampling, centre-crop, scale to [0, 1], normalise), written with
Pillow and numpy so that the serving process needs neither torch nor
torchvision; it follows torchvision's PIL path step by step (output size
rounding, crop offsets) and a test checks it against torchvision itself.
Images arrive as JPEG/PNG bytes, or as base64 text of those bytes (what a
KServe v2 JSON request can carry in a BYTES tensor)."""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import asdict, dataclass

import numpy as np

from agent.errors import AgentError


@dataclass(frozen=True)
class Preprocessing:
    resize_size: int
    crop_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def of(cls, model: str) -> Preprocessing:
        from agent.registry import get

        spec = get(model)
        return cls(spec.resize_size, spec.input_shape[1], spec.mean, spec.std)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Preprocessing:
        d = json.loads(text)
        return cls(int(d["resize_size"]), int(d["crop_size"]), tuple(d["mean"]), tuple(d["std"]))


def decode_image(data: bytes):  # noqa: ANN201 - PIL.Image.Image
    """RGB image from JPEG/PNG (any format Pillow reads) bytes or base64 text of them."""
    from PIL import Image, UnidentifiedImageError

    for raw in (data, None):
        if raw is None:
            try:
                raw = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                break
        try:
            with Image.open(io.BytesIO(raw)) as im:
                return im.convert("RGB")
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
            continue
    raise AgentError(f"not an image Pillow can read (nor base64 of one): {len(data)} bytes starting {data[:8]!r}")


def resized_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """(width, height) with the shorter side = ``shorter``; the longer one truncated
    (torchvision's ``_compute_resized_output_size``)."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def preprocess(data: bytes, p: Preprocessing) -> np.ndarray:
    """One image's bytes -> the model input, float32 [3, crop, crop]."""
    from PIL import Image

    img = decode_image(data)
    img = img.resize(resized_size(*img.size, p.resize_size), Image.BILINEAR)
    w, h = img.size
    top, left = int(round((h - p.crop_size) / 2.0)), int(round((w - p.crop_size) / 2.0))
    img = img.crop((left, top, left + p.crop_size, top + p.crop_size))
    x = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    mean = np.asarray(p.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(p.std, dtype=np.float32).reshape(3, 1, 1)
    return (x - mean) / std


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, computed in float64, returned as float32."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def top_k(probs: np.ndarray, k: int, labels: list[str]) -> list[tuple[str, int, float]]:
    """[(label, class id, probability)] of one sample, highest first (ties: lower id first)."""
    order = np.lexsort((np.arange(probs.shape[-1]), -probs))[:k]
    return [(labels[i], int(i), float(probs[i])) for i in order]


def parse_classification(entries) -> list[tuple[str, int, float]]:  # noqa: ANN001
    """Triton's classification extension strings ``b"<value>:<index>:<label>"`` -> tuples."""
    out = []
    for e in entries:
        text = e.decode() if isinstance(e, bytes) else str(e)
        value, index, label = text.split(":", 2)
        out.append((label, int(index), float(value)))
    return out


def synthetic_jpeg(width: int = 640, height: int = 480, seed: int = 0, quality: int = 90) -> bytes:
    """A photo-sized JPEG (smooth colour gradients plus noise, so it compresses like a photo
    rather than a flat image) for benchmarks on nodes that have no sample images."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 200
    rgb += rng.normal(0, 12, size=rgb.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def image_batch(images: list[bytes], batch: int) -> np.ndarray:
    """``batch`` encoded images (cycling through ``images``) as Triton's BYTES tensor [batch, 1]."""
    out = np.empty((batch, 1), dtype=np.object_)
    for i in range(batch):
        out[i, 0] = images[i % len(images)]
    return out
