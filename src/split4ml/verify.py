"""Prove a split bit-exact: the chained stage C-simulations against the whole model's.

The same samples go through the chain of per-board C-simulation libraries (each stage's output
fed to the next, as the runtime does) and through the library of the whole model compiled with
the same per-layer settings. The split is correct only if every output value is identical.
Values crossing a board boundary are checked to be exactly representable in the wire type
(:meth:`~split4ml.fixed.FixedType.to_int`), which is what the runtime sends.

With labels, :func:`verify_stages` also reports the accuracy of the fixed-point model (argmax of
the whole model's C-simulation) and of a float reference (e.g. the Keras model).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import BuildError, DataError, PlanError
from .fixed import FixedType
from .split import Stage

Progress = Callable[[str, int, int], None]

#: Step names reported to the ``progress`` callback.
STEP_COMPILE = "compile C-simulations"
STEP_SIMULATE = "simulate samples"


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify_stages`.

    Attributes:
        bit_exact: every output value of the chain equals the whole model's.
        samples: number of samples compared.
        mismatched_samples: samples with at least one differing output value.
        max_abs_diff: largest absolute difference of any output value (0.0 when bit-exact).
        n_stages: number of stages in the chain.
        fixed_accuracy: accuracy of the whole model's C-simulation (labels given), else None.
        float_accuracy: accuracy of the float reference (labels and float model given), else None.
        mismatched_indices: indices of the mismatched samples.
    """

    bit_exact: bool
    samples: int
    mismatched_samples: int
    max_abs_diff: float
    n_stages: int
    fixed_accuracy: float | None = None
    float_accuracy: float | None = None
    mismatched_indices: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (keys are a stable interface of ``split4ml verify --json``)."""
        return {
            "bit_exact": self.bit_exact,
            "samples": self.samples,
            "mismatched_samples": self.mismatched_samples,
            "max_abs_diff": self.max_abs_diff,
            "n_stages": self.n_stages,
            "fixed_accuracy": self.fixed_accuracy,
            "float_accuracy": self.float_accuracy,
            "mismatched_indices": list(self.mismatched_indices[:100]),
        }


def random_inputs(input_type: FixedType, shape: Sequence[int], n: int, seed: int = 0) -> np.ndarray:
    """``n`` seeded random samples of ``shape``, uniform over ``input_type``'s whole range and exactly
    on its grid (every value is ``k * lsb`` for an integer ``k`` in the type's range).

    Returns a float64 array of shape ``(n, *shape)``.
    """
    if n < 0:
        raise DataError(f"number of random samples must be >= 0, got {n}")
    if not input_type.exact_in_float64:
        raise DataError(f"input type {input_type} is wider than 53 bits; its values are not exact in float64")
    scale = math.ldexp(1.0, input_type.fractional)
    lo = round(input_type.min_value * scale)
    hi = round(input_type.max_value * scale)
    rng = np.random.default_rng(seed)
    ints = rng.integers(lo, hi, size=(int(n), *(int(d) for d in shape)), dtype=np.int64, endpoint=True)
    return ints.astype(np.float64) * input_type.lsb


def _labels(y: np.ndarray, n: int) -> np.ndarray:
    arr = np.asarray(y)
    if arr.shape[0] != n:
        raise DataError(f"labels have {arr.shape[0]} entries but there are {n} samples")
    if arr.ndim == 2 and arr.shape[1] > 1:
        return np.argmax(arr, axis=1)
    return arr.reshape(n).astype(np.int64)


def _accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    pred = np.argmax(np.asarray(outputs).reshape(len(labels), -1), axis=1)
    return float(np.mean(pred == labels)) if len(labels) else 0.0


def _check_wire(values: np.ndarray, wire: FixedType, where: str) -> None:
    try:
        wire.to_int(values)
    except PlanError as exc:
        raise BuildError(
            f"{where}: {exc}. The stage's C-simulation does not produce its declared wire type; check the "
            "last layer's result precision in the plan"
        ) from exc


def _check_chain(stages: Sequence[Stage], whole: Stage) -> None:
    if not stages:
        raise BuildError("verify needs at least one stage")
    for a, b in zip(stages, stages[1:], strict=False):
        if int(np.prod(a.output_shape)) != int(np.prod(b.input_shape)):
            raise BuildError(
                f"{a.name} outputs shape {a.output_shape} but {b.name} takes {b.input_shape}; the stages do not chain"
            )
    if stages[0].input_shape != whole.input_shape:
        raise BuildError(f"{stages[0].name} takes shape {stages[0].input_shape} but the whole model takes "
                         f"{whole.input_shape}")
    if int(np.prod(stages[-1].output_shape)) != int(np.prod(whole.output_shape)):
        raise BuildError(f"{stages[-1].name} outputs shape {stages[-1].output_shape} but the whole model "
                         f"outputs {whole.output_shape}")


def verify_stages(stages: Sequence[Stage], whole: Stage, x: np.ndarray, y: np.ndarray | None = None,
                  float_model: Callable[[np.ndarray], Any] | None = None,
                  progress: Progress | None = None, batch_size: int = 256) -> VerifyResult:
    """Compare the chained C-simulation of ``stages`` with the whole model's, sample by sample.

    Args:
        stages: the pipeline, in order.
        whole: the whole model as one stage (:func:`split4ml.split.whole_model_stage`).
        x: samples, ``(n, *input_shape)``; quantised to each model's input type first.
        y: optional labels (class indices or one-hot) for the accuracies.
        float_model: optional float reference, ``x -> class scores`` (e.g. a Keras ``predict``).
        progress: optional callback ``(step, done, total)``.
        batch_size: samples per batch between progress reports.

    Raises:
        BuildError: a stage fails to compile, the stages do not chain, or a value leaving a stage is
            not representable in its wire type.
        DataError: ``x`` or ``y`` has the wrong shape.
    """
    from .hls import csim

    def report(step: str, done: int, total: int) -> None:
        if progress is not None:
            progress(step, done, total)

    _check_chain(stages, whole)
    xa = np.asarray(x, dtype=np.float64)
    in_shape = whole.input_shape
    if xa.shape[1:] != in_shape:
        if xa.ndim >= 2 and int(np.prod(xa.shape[1:])) == int(np.prod(in_shape)):
            xa = xa.reshape((xa.shape[0], *in_shape))
        else:
            raise DataError(f"samples have shape {xa.shape[1:]}, the model input is {in_shape}")
    n = int(xa.shape[0])
    labels = _labels(y, n) if y is not None else None

    all_stages = [*stages, whole]
    report(STEP_COMPILE, 0, len(all_stages))
    models = csim.compile_stages(all_stages, progress=lambda done, total: report(STEP_COMPILE, done, total))
    report(STEP_COMPILE, len(all_stages), len(all_stages))
    chain_models, whole_model = models[:-1], models[-1]

    x_chain = stages[0].input_type.quantize(xa)
    x_whole = whole.input_type.quantize(xa)
    out_chain = np.zeros((n, *whole.output_shape), dtype=np.float64)
    out_whole = np.zeros((n, *whole.output_shape), dtype=np.float64)
    report(STEP_SIMULATE, 0, n)
    for start in range(0, n, max(1, int(batch_size))):
        stop = min(n, start + max(1, int(batch_size)))
        h = x_chain[start:stop]
        for st, model in zip(stages, chain_models, strict=True):
            h = model.predict(h)
            _check_wire(h, st.output_type, f"{st.name} on {st.board.name} (samples {start}..{stop - 1})")
        out_chain[start:stop] = h.reshape((stop - start, *whole.output_shape))
        out_whole[start:stop] = whole_model.predict(x_whole[start:stop]).reshape((stop - start, *whole.output_shape))
        report(STEP_SIMULATE, stop, n)

    flat_chain = out_chain.reshape(n, -1)
    flat_whole = out_whole.reshape(n, -1)
    same = np.all(flat_chain == flat_whole, axis=1) if n else np.zeros(0, dtype=bool)
    mismatched = tuple(int(i) for i in np.flatnonzero(~same))
    max_abs = float(np.max(np.abs(flat_chain - flat_whole))) if n and flat_chain.size else 0.0

    fixed_acc = float_acc = None
    if labels is not None:
        fixed_acc = _accuracy(out_whole, labels)
        if float_model is not None:
            float_acc = _accuracy(np.asarray(float_model(xa)), labels)

    return VerifyResult(
        bit_exact=not mismatched,
        samples=n,
        mismatched_samples=len(mismatched),
        max_abs_diff=max_abs,
        n_stages=len(stages),
        fixed_accuracy=fixed_acc,
        float_accuracy=float_acc,
        mismatched_indices=mismatched,
    )
