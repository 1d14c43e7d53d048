"""Prove a split bit-exact: the chained stage C-simulations against the whole model's.

The same samples go through the per-board C-simulation libraries, run as the pipeline's DAG (each
board's input gathered from its producers' outputs, sliced and concatenated, as the runtime does) and
through the reference: the whole model as hls4ml converts it directly from the user's original file,
with the same per-layer settings (:class:`~split4ml.hls.reference.Reference`; a graph built by hand has
split4ml's own whole-model stage instead). The split is correct only if every output value is
identical.
Values crossing a board boundary are checked to be exactly representable in the wire type
(:meth:`~split4ml.fixed.FixedType.to_int`), which is what the runtime sends. A model with skip
connections is verified the same way: its boards form a line of packed stages
(:func:`split4ml.stages.dag_stages`), each receiving and sending one wire, and the whole model is
compiled as one DAG project (:func:`split4ml.stages.whole_dag_stage`).

With labels, :func:`verify_stages` also reports the accuracy of the fixed-point model (argmax of
the whole model's C-simulation) and of a float reference (e.g. the Keras model).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import BuildError, DataError, PlanError
from .fixed import FixedType
from .stages import Node, Pipeline, Source, Stage, linear_pipeline

Progress = Callable[[str, int, int], None]

#: Step names reported to the ``progress`` callback.
STEP_COMPILE = "compile C-simulations"
STEP_SIMULATE = "simulate samples"


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify_pipeline` (and :func:`verify_stages`).

    Attributes:
        bit_exact: every output value of the chain equals the whole model's.
        samples: number of samples compared.
        mismatched_samples: samples with at least one differing output value.
        max_abs_diff: largest absolute difference of any output value (0.0 when bit-exact).
        n_stages: number of pipeline steps (the shards of a split layer share one step).
        fixed_accuracy: accuracy of the whole model's C-simulation (labels given), else None.
        float_accuracy: accuracy of the float reference (labels and float model given), else None.
        mismatched_indices: indices of the mismatched samples.
        n_boards: number of boards (pipeline nodes); ``None`` means one per step.
        reference: what the boards were compared with (:func:`~split4ml.hls.reference.describe_reference`).
        framework_agreement: for a quantized model its framework can run (HGQ2, which is bit-exact to
            Keras by design), how the pipeline's outputs compare with the framework model's own:
            ``{"framework", "samples", "matching_samples", "max_abs_diff", "bit_exact"}``.
    """

    bit_exact: bool
    samples: int
    mismatched_samples: int
    max_abs_diff: float
    n_stages: int
    fixed_accuracy: float | None = None
    float_accuracy: float | None = None
    mismatched_indices: tuple[int, ...] = ()
    n_boards: int | None = None
    reference: Mapping[str, Any] | None = None
    framework_agreement: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (keys are a stable interface of ``split4ml verify --json``)."""
        return {
            "bit_exact": self.bit_exact,
            "samples": self.samples,
            "mismatched_samples": self.mismatched_samples,
            "max_abs_diff": self.max_abs_diff,
            "n_stages": self.n_stages,
            "n_boards": self.n_boards if self.n_boards is not None else self.n_stages,
            "fixed_accuracy": self.fixed_accuracy,
            "float_accuracy": self.float_accuracy,
            "mismatched_indices": list(self.mismatched_indices[:100]),
            "reference": dict(self.reference) if self.reference is not None else None,
            "framework_agreement": dict(self.framework_agreement) if self.framework_agreement is not None else None,
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


def _check_pipeline(pipeline: Pipeline, whole: Stage) -> None:
    """Shapes must chain: each node's gathered input has its stage's size; the output, the whole model's."""
    if not pipeline.nodes:
        raise BuildError("verify needs at least one stage")
    shapes: dict[str | None, tuple[int, ...]] = {None: whole.input_shape}
    names: dict[str | None, str] = {None: "the model input"}

    def gathered(sources: Sequence[Source], who: str) -> tuple[int, ...]:
        lead: tuple[int, ...] | None = None
        width = 0
        for src in sources:
            if src.node not in shapes:
                raise BuildError(f"{who} reads {src.node!r}, which is not a node before it in the pipeline")
            shape = shapes[src.node]
            stop = shape[-1] if src.stop is None else src.stop
            if not 0 <= src.start < stop <= shape[-1]:
                raise BuildError(f"{who} reads features {src.start}:{stop} of {names[src.node]}, which has "
                                 f"{shape[-1]} (shape {shape})")
            if lead is not None and shape[:-1] != lead:
                raise BuildError(f"{who} concatenates outputs of shapes {lead} and {shape[:-1]} (all but the last "
                                 "axis must agree)")
            lead = shape[:-1]
            width += stop - src.start
        assert lead is not None
        return (*lead, width)

    for node in pipeline.nodes:
        st = node.stage
        if not node.sources:
            raise BuildError(f"{node.id} on {st.board.name} has no input")
        got = gathered(node.sources, f"{node.id} on {st.board.name}")
        if math.prod(got) != math.prod(st.input_shape):
            srcs = ", ".join(names[s.node] for s in node.sources)
            raise BuildError(f"{srcs} output(s) shape {got} but {node.id} takes {st.input_shape}; the stages do not "
                             "chain")
        shapes[node.id] = st.output_shape
        names[node.id] = node.id
    out = gathered(pipeline.outputs, "the pipeline output")
    if math.prod(out) != math.prod(whole.output_shape):
        raise BuildError(f"the pipeline outputs shape {out} but the whole model outputs {whole.output_shape}")


def _pipeline_input_type(pipeline: Pipeline) -> FixedType:
    types = {n.stage.input_type for n in pipeline.nodes if any(s.node is None for s in n.sources)}
    if len(types) != 1:
        raise BuildError(f"the boards reading the model input expect {len(types)} different input types "
                         f"{sorted(str(t) for t in types)}; they must all take the model's input type")
    return next(iter(types))


def verify_pipeline(pipeline: Pipeline, whole: Any, x: np.ndarray, y: np.ndarray | None = None,
                    float_model: Callable[[np.ndarray], Any] | None = None,
                    progress: Progress | None = None, batch_size: int = 256,
                    framework_model: tuple[str, Callable[[np.ndarray], Any]] | None = None) -> VerifyResult:
    """Compare the C-simulation of ``pipeline`` (every board's library, run as the DAG) with the whole
    model's, sample by sample.

    Args:
        pipeline: the boards as a DAG (:func:`split4ml.lower.plan_pipeline`); nodes reading the
            model input must all take the same input type.
        whole: the reference: :class:`~split4ml.hls.reference.Reference` (hls4ml's direct conversion of
            the model file), or the whole model as one stage (:func:`split4ml.stages.whole_model_stage`).
        x: samples, ``(n, *input_shape)``; quantised to each model's input type first.
        y: optional labels (class indices or one-hot) for the accuracies.
        float_model: optional float reference, ``x -> class scores`` (e.g. a Keras ``predict``).
        progress: optional callback ``(step, done, total)``.
        batch_size: samples per batch between progress reports.
        framework_model: optional ``(name, x -> y)``: the framework model's own outputs, compared with
            the pipeline's (``framework_agreement``).

    Every board's stage is compiled through the cache (in parallel, :func:`~split4ml.hls.csim.compile_stages`).
    Every value a board outputs is checked to be representable in its output wire type.

    Raises:
        BuildError: a stage fails to compile, the nodes do not chain, or a value leaving a board is
            not representable in its wire type.
        DataError: ``x`` or ``y`` has the wrong shape.
    """
    from .hls import csim
    from .hls.reference import describe_reference

    def report(step: str, done: int, total: int) -> None:
        if progress is not None:
            progress(step, done, total)

    _check_pipeline(pipeline, whole)
    in_type = _pipeline_input_type(pipeline)
    xa = np.asarray(x, dtype=np.float64)
    in_shape = whole.input_shape
    if xa.shape[1:] != in_shape:
        if xa.ndim >= 2 and int(np.prod(xa.shape[1:])) == int(np.prod(in_shape)):
            xa = xa.reshape((xa.shape[0], *in_shape))
        else:
            raise DataError(f"samples have shape {xa.shape[1:]}, the model input is {in_shape}")
    n = int(xa.shape[0])
    labels = _labels(y, n) if y is not None else None

    all_stages = [*(node.stage for node in pipeline.nodes), whole]
    report(STEP_COMPILE, 0, len(all_stages))
    models = csim.compile_stages(all_stages, progress=lambda done, total: report(STEP_COMPILE, done, total))
    report(STEP_COMPILE, len(all_stages), len(all_stages))
    whole_model = models[-1]

    x_pipe = in_type.quantize(xa)
    x_whole = whole.input_type.quantize(xa)
    out_pipe = np.zeros((n, *whole.output_shape), dtype=np.float64)
    out_whole = np.zeros((n, *whole.output_shape), dtype=np.float64)
    report(STEP_SIMULATE, 0, n)
    step = max(1, int(batch_size))
    for start in range(0, n, step):
        stop = min(n, start + step)

        def runner(node: Node, model: Any, start: int = start, stop: int = stop) -> Callable[[np.ndarray], np.ndarray]:
            st = node.stage

            def run(h: np.ndarray) -> np.ndarray:
                h = h.reshape((h.shape[0], *st.input_shape))
                out = model.predict(h)
                _check_wire(out, st.output_type, f"{node.id} on {st.board.name} (samples {start}..{stop - 1})")
                return np.asarray(out).reshape((out.shape[0], *st.output_shape))

            return run

        predict = {node.id: runner(node, model) for node, model in zip(pipeline.nodes, models[:-1], strict=True)}
        h = pipeline.run(x_pipe[start:stop], predict)
        out_pipe[start:stop] = h.reshape((stop - start, *whole.output_shape))
        out_whole[start:stop] = whole_model.predict(x_whole[start:stop]).reshape((stop - start, *whole.output_shape))
        report(STEP_SIMULATE, stop, n)

    flat_pipe = out_pipe.reshape(n, -1)
    flat_whole = out_whole.reshape(n, -1)
    same = np.all(flat_pipe == flat_whole, axis=1) if n else np.zeros(0, dtype=bool)
    mismatched = tuple(int(i) for i in np.flatnonzero(~same))
    max_abs = float(np.max(np.abs(flat_pipe - flat_whole))) if n and flat_pipe.size else 0.0

    fixed_acc = float_acc = None
    if labels is not None:
        fixed_acc = _accuracy(out_whole, labels)
        if float_model is not None:
            float_acc = _accuracy(np.asarray(float_model(xa)), labels)
    agreement = None
    if framework_model is not None and n:
        fw_name, fw = framework_model
        fw_out = np.asarray(fw(x_pipe), dtype=np.float64).reshape(n, -1)
        if fw_out.shape == flat_pipe.shape:
            same_fw = np.all(fw_out == flat_pipe, axis=1)
            agreement = {"framework": fw_name, "samples": n, "matching_samples": int(same_fw.sum()),
                         "max_abs_diff": float(np.max(np.abs(fw_out - flat_pipe))), "bit_exact": bool(same_fw.all())}

    return VerifyResult(
        bit_exact=not mismatched,
        samples=n,
        mismatched_samples=len(mismatched),
        max_abs_diff=max_abs,
        n_stages=len(pipeline.steps) if pipeline.steps else len(pipeline.nodes),
        fixed_accuracy=fixed_acc,
        float_accuracy=float_acc,
        mismatched_indices=mismatched,
        n_boards=len(pipeline.nodes),
        reference=describe_reference(whole),
        framework_agreement=agreement,
    )


def verify_stages(stages: Sequence[Stage], whole: Stage, x: np.ndarray, y: np.ndarray | None = None,
                  float_model: Callable[[np.ndarray], Any] | None = None,
                  progress: Progress | None = None, batch_size: int = 256) -> VerifyResult:
    """Compare the chained C-simulation of ``stages`` (one board each, in order) with the whole
    model's: :func:`verify_pipeline` of :func:`~split4ml.stages.linear_pipeline` ``(stages)``.

    Raises:
        BuildError: a stage fails to compile, the stages do not chain, or a value leaving a stage is
            not representable in its wire type.
        DataError: ``x`` or ``y`` has the wrong shape.
    """
    if not stages:
        raise BuildError("verify needs at least one stage")
    if stages[0].input_shape != whole.input_shape:
        raise BuildError(f"{stages[0].name} takes shape {stages[0].input_shape} but the whole model takes "
                         f"{whole.input_shape}")
    return verify_pipeline(linear_pipeline(list(stages)), whole, x, y, float_model=float_model, progress=progress,
                           batch_size=batch_size)


def verify_plan(plan: Any, graph: Any, x: np.ndarray, y: np.ndarray | None = None,
                progress: Progress | None = None) -> VerifyResult:
    """Verify a plan's boards against its reference (:func:`split4ml.lower.plan_pipeline`).

    With labels the float accuracy is the framework model's own (Keras, torch) when split4ml can run
    it, else (a graph built by hand) that of the graph rebuilt in Keras. For a quantized Keras 3 model
    (HGQ2, bit-exact to Keras by design) the pipeline's outputs are also compared with Keras's.
    """
    from .lower import plan_pipeline

    pipeline, whole = plan_pipeline(plan, graph)
    source = graph.source
    own = source.float_predict() if source is not None else None
    float_model = None
    if y is not None:
        if own is not None:
            float_model = own
        elif source is None:
            from .hls.to_keras import keras_model_from_graph

            km = keras_model_from_graph(graph)

            def float_model(a: Any) -> Any:
                return km.predict(a, verbose=0)
    framework = (source.framework, own) if (source is not None and own is not None and source.quantized) else None
    return verify_pipeline(pipeline, whole, x, y, float_model=float_model, progress=progress,
                           framework_model=framework)
