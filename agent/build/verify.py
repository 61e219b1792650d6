"""Engine output vs eager PyTorch on the same random inputs.

Metrics, over every checked batch (batch 1 and the max batch):
- relative error = max |engine - eager| / max |eager| (outputs of random-weight
  models can be ~1e-9, so absolute tolerances would mean nothing);
- top-1 agreement = fraction of samples whose engine argmax is the eager argmax,
  or a class whose eager logit is within ``rtol`` of the eager maximum (a tie at
  the tolerance the engine is held to is not a disagreement).
An engine passes when relative error <= rtol and agreement >= min_top1."""

from __future__ import annotations

import numpy as np

from agent.runners import Runner
from agent.schema import Verification

TOLERANCES = {"fp32": (1e-3, 1.0), "fp16": (2e-2, 0.9)}  # precision -> (rtol, min_top1)
INPUT_SEED = 1234


def random_batch(batch: int, input_shape: tuple[int, ...], seed: int = INPUT_SEED) -> np.ndarray:
    return np.random.RandomState(seed + batch).standard_normal((batch, *input_shape)).astype(np.float32)


def top1_agreement(engine: np.ndarray, eager: np.ndarray, rtol: float) -> float:
    scale = float(np.abs(eager).max()) or 1.0
    picked = engine.argmax(axis=1)
    best = eager.max(axis=1)
    at_pick = eager[np.arange(len(eager)), picked]
    return float(np.mean(best - at_pick <= rtol * scale))


def verify(engine: Runner, eager: Runner, batch_sizes: list[int], precision: str = "fp32",
           rtol: float | None = None, min_top1: float | None = None) -> Verification:
    d_rtol, d_top1 = TOLERANCES[precision]
    rtol = d_rtol if rtol is None else rtol
    min_top1 = d_top1 if min_top1 is None else min_top1
    batch_sizes = sorted(set(batch_sizes))
    rel = absd = 0.0
    agree: list[float] = []
    try:
        for b in batch_sizes:
            x = random_batch(b, engine.input_shape)
            ref = eager(x)
            out = engine(x)
            if out.shape != ref.shape:
                return Verification(passed=False, batch_sizes=batch_sizes, max_rel_error=float("inf"),
                                    max_abs_error=float("inf"), top1_agreement=0.0, rtol=rtol,
                                    min_top1=min_top1,
                                    message=f"batch {b}: output shape {list(out.shape)} != eager {list(ref.shape)}")
            if not np.isfinite(out).all():
                return Verification(passed=False, batch_sizes=batch_sizes, max_rel_error=float("inf"),
                                    max_abs_error=float("inf"), top1_agreement=0.0, rtol=rtol,
                                    min_top1=min_top1, message=f"batch {b}: non-finite outputs")
            diff = float(np.abs(out - ref).max())
            scale = float(np.abs(ref).max()) or 1.0
            absd = max(absd, diff)
            rel = max(rel, diff / scale)
            agree.extend([top1_agreement(out, ref, rtol)] * b)
    except Exception as e:  # the engine could not run at one of the batch sizes
        msg = " ".join(str(e).split())[:300]
        return Verification(passed=False, batch_sizes=batch_sizes, max_rel_error=float("inf"),
                            max_abs_error=float("inf"), top1_agreement=0.0, rtol=rtol,
                            min_top1=min_top1, message=f"run failed: {type(e).__name__}: {msg}")
    top1 = float(np.mean(agree))
    passed = rel <= rtol and top1 >= min_top1
    message = "" if passed else (
        f"max relative error {rel:.2e} (limit {rtol:.0e}), top-1 agreement {top1:.2f} (min {min_top1:.2f})")
    return Verification(passed=passed, batch_sizes=batch_sizes, max_rel_error=rel,
                        max_abs_error=absd, top1_agreement=top1, rtol=rtol, min_top1=min_top1,
                        message=message)
