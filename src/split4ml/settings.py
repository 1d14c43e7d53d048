"""hls4ml settings of a layer and of a whole build: reuse factor, strategy, precisions, io type.

These are plain values. The planner chooses them, the plan file records them, and the hls
module writes them into each board's hls4ml config, so the same numbers flow from estimate to
firmware. Every place a user writes them is read here too: ``--precision``
(:func:`precision_family`), ``--config`` (:func:`parse_hls_config`), a plan's ``hls:`` section
(:func:`build_settings_from_dict`) and a layer's precision (:func:`parse_layer_precision`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import PlanError, Split4mlError
from .fixed import FixedType

#: hls4ml strategies, io types, and the planner's objectives: the one list of each every command reads.
STRATEGIES = ("Latency", "Resource")
IO_TYPES = ("io_parallel", "io_stream")
OBJECTIVES = ("throughput", "latency", "boards")

def choice(value: object, choices: Sequence[str], what: str, error: type[Split4mlError] = PlanError,
           hint: str = "") -> str:
    """``value`` spelled as in ``choices``, matched in any case (hls4ml reads ``resource`` as
    ``Resource`` too), so ``--strategy resource`` and ``io_type: IO_Stream`` mean what they say.

    Raises:
        PlanError: (or ``error``) ``value`` is none of ``choices``; the message names ``what``, lists them
            and ends with ``hint`` (how to choose) when given.
    """
    text = str(value).strip().lower()
    for c in choices:
        if c.lower() == text:
            return c
    raise error(f"{what} {value!r} is not one of {', '.join(choices)}" + (f"; {hint}" if hint else ""))


#: Default precision of weights, biases and accumulators (hls4ml's own default).
DEFAULT_PRECISION = FixedType(16, 6)
#: Default precision of every layer result: rounding and saturation cut the truncation error
#: about 40x against plain ``ap_fixed<16,6>`` (checked on these machines, see DESIGN.md).
DEFAULT_RESULT_PRECISION = FixedType(16, 6, rounding="RND_CONV", saturation="SAT")


@dataclass(frozen=True)
class LayerPrecision:
    """The concrete fixed-point types of one layer (never ``auto``).

    ``input`` is the type of the values the layer reads. It is set for the layers of a quantized model
    (where it differs from layer to layer); ``None`` means the layer reads values of its own
    ``result`` type, as in a float model built with one precision family.
    """

    weight: FixedType = DEFAULT_PRECISION
    bias: FixedType = DEFAULT_PRECISION
    result: FixedType = DEFAULT_RESULT_PRECISION
    accum: FixedType = DEFAULT_PRECISION
    input: FixedType | None = None

    @property
    def data(self) -> FixedType:
        """The type of the values the layer reads: ``input``, else ``result``."""
        return self.input if self.input is not None else self.result

    def as_dict(self) -> dict[str, str]:
        out = {"weight": str(self.weight), "bias": str(self.bias), "result": str(self.result),
               "accum": str(self.accum)}
        if self.input is not None:
            out["input"] = str(self.input)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, str], where: str = "precision") -> LayerPrecision:
        unknown = set(d) - {"weight", "bias", "result", "accum", "input"}
        if unknown:
            raise PlanError(f"{where}: unknown precision field(s) {sorted(unknown)}; use weight, bias, result, accum "
                            "(and input)")
        base = cls()
        try:
            return cls(
                weight=FixedType.parse(d.get("weight", base.weight)),
                bias=FixedType.parse(d.get("bias", base.bias)),
                result=FixedType.parse(d.get("result", base.result)),
                accum=FixedType.parse(d.get("accum", base.accum)),
                input=FixedType.parse(d["input"]) if d.get("input") is not None else None,
            )
        except PlanError as exc:
            raise PlanError(f"{where}: {exc}") from exc


@dataclass(frozen=True)
class LayerSettings:
    """hls4ml settings of one layer."""

    reuse_factor: int = 1
    strategy: str = "Latency"
    precision: LayerPrecision = field(default_factory=LayerPrecision)

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategy", choice(self.strategy, STRATEGIES, "strategy"))
        if int(self.reuse_factor) < 1:
            raise PlanError(f"reuse_factor must be >= 1, got {self.reuse_factor}")


@dataclass(frozen=True)
class BuildSettings:
    """Settings shared by every board of a plan."""

    io_type: str = "io_parallel"
    default_precision: FixedType = DEFAULT_PRECISION
    result_precision: FixedType = DEFAULT_RESULT_PRECISION
    accum_precision: FixedType = DEFAULT_PRECISION
    #: Type of the model input (what the first board receives); defaults to the result precision.
    input_precision: FixedType = DEFAULT_RESULT_PRECISION

    def __post_init__(self) -> None:
        object.__setattr__(self, "io_type", choice(self.io_type, IO_TYPES, "io_type"))

    def layer_precision(self) -> LayerPrecision:
        return LayerPrecision(weight=self.default_precision, bias=self.default_precision,
                              result=self.result_precision, accum=self.accum_precision)


# ----------------------------------------------------------------------------- reading settings
def _expect(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise PlanError(f"{where}: {msg}")


def parse_fixed(value: Any, where: str) -> FixedType:
    """A fixed-point type written in a file or an option; the error names ``where``."""
    try:
        return FixedType.parse(str(value))
    except PlanError as exc:
        raise PlanError(f"{where}: {exc}") from exc


def parse_layer_precision(value: Any, where: str, base: LayerPrecision | None = None) -> LayerPrecision:
    """A layer's precision as a plan file, ``--config`` or the library gives it: a
    :class:`LayerPrecision`, one type for all four fields, or a mapping of some of ``weight``, ``bias``,
    ``result`` and ``accum`` (the others from ``base``, or the defaults without one; a mapping without
    ``base`` may also give ``input``). Errors name ``where``."""
    if isinstance(value, LayerPrecision):
        return value
    if isinstance(value, (str, FixedType)):
        t = parse_fixed(value, where)
        return LayerPrecision(weight=t, bias=t, result=t, accum=t)
    if isinstance(value, Mapping):
        if base is None:
            return LayerPrecision.from_dict({k: str(v) for k, v in value.items()}, where=where)
        fields = ("weight", "bias", "result", "accum")
        unknown = sorted(set(value) - set(fields))
        _expect(not unknown, where, f"unknown precision field(s) {unknown}; use {', '.join(fields)}")
        return replace(base, **{k: parse_fixed(v, f"{where}.{k}") for k, v in value.items()})
    raise PlanError(f"{where}: expected a type such as ap_fixed<16,6> or a mapping of weight, bias, result, accum, "
                    f"got {value!r}")


def build_settings_from_dict(d: Mapping[str, Any] | None, where: str = "hls") -> BuildSettings:
    """Read the ``hls:`` section of a plan file."""
    base = BuildSettings()
    if not d:
        return base
    _expect(isinstance(d, Mapping), where, "expected a mapping")
    known = {"io_type", "default_precision", "result_precision", "accum_precision", "input_precision",
             "reuse_factor", "strategy"}
    unknown = set(d) - known
    _expect(not unknown, where, f"unknown field(s) {sorted(unknown)}; allowed: {sorted(known)}")
    io_type = choice(d.get("io_type", base.io_type), IO_TYPES, f"{where}.io_type:")
    return BuildSettings(
        io_type=io_type,
        default_precision=parse_fixed(d.get("default_precision", base.default_precision), f"{where}.default_precision"),
        result_precision=parse_fixed(d.get("result_precision", base.result_precision), f"{where}.result_precision"),
        accum_precision=parse_fixed(d.get("accum_precision", base.accum_precision), f"{where}.accum_precision"),
        input_precision=parse_fixed(d.get("input_precision", base.input_precision), f"{where}.input_precision"),
    )


def precision_family(precision: FixedType) -> BuildSettings:
    """Build settings for ``--precision``: weights, biases and accumulators in ``precision``;
    results and the model input with the same width, rounded (RND_CONV) and saturated."""
    p = FixedType(precision.width, precision.integer, precision.signed)
    r = FixedType(precision.width, precision.integer, precision.signed, rounding="RND_CONV", saturation="SAT")
    return BuildSettings(default_precision=p, result_precision=r, accum_precision=p, input_precision=r)


def hls_precision(value: Any, where: str) -> LayerPrecision | FixedType:
    """A precision in an hls4ml config: a type, or a mapping of weight, bias, result, accum."""
    if isinstance(value, Mapping):
        known = {"weight", "bias", "result", "accum"}
        extra = set(value) - known
        if extra:
            raise PlanError(f"{where}: split4ml sets only {sorted(known)} precisions; remove {sorted(extra)}")
        return LayerPrecision.from_dict({k: str(v) for k, v in value.items()}, where=where)
    try:
        return FixedType.parse(str(value))
    except PlanError as exc:
        raise PlanError(f"{where}: {exc}") from exc


def parse_hls_config(cfg: Mapping[str, Any], build: BuildSettings,
                     ) -> tuple[BuildSettings, int | None, str | None, dict[str, dict[str, Any]]]:
    """Read an hls4ml-style config (``Model`` and ``LayerName`` sections).

    Returns build settings, global reuse factor, global strategy, and per-layer overrides
    (``{"reuse_factor", "strategy", "precision"}``) for :func:`choose_settings`.
    """
    if not isinstance(cfg, Mapping):
        raise PlanError("--config: expected a mapping with 'Model' and/or 'LayerName' sections")
    unknown = set(cfg) - {"Model", "LayerName", "IOType"}
    if unknown:
        raise PlanError(f"--config: unknown section(s) {sorted(unknown)}; split4ml reads Model, LayerName, IOType")
    model = cfg.get("Model") or {}
    rf = model.get("ReuseFactor")
    strategy = model.get("Strategy")
    if strategy is not None:
        strategy = choice(strategy, STRATEGIES, "--config Model.Strategy:")
    if "Precision" in model:
        p = model["Precision"]
        if isinstance(p, Mapping):
            p = p.get("default", build.default_precision)
        t = hls_precision(p, "--config Model.Precision")
        if isinstance(t, FixedType):
            build = BuildSettings(io_type=build.io_type, default_precision=t, result_precision=t, accum_precision=t,
                                  input_precision=t)
    io = cfg.get("IOType") or model.get("IOType")
    if io is not None:
        build = BuildSettings(io_type=str(io), default_precision=build.default_precision,
                              result_precision=build.result_precision, accum_precision=build.accum_precision,
                              input_precision=build.input_precision)
    overrides: dict[str, dict[str, Any]] = {}
    for name, lc in (cfg.get("LayerName") or {}).items():
        where = f"--config LayerName.{name}"
        if not isinstance(lc, Mapping):
            raise PlanError(f"{where}: expected a mapping")
        o: dict[str, Any] = {}
        if "ReuseFactor" in lc:
            o["reuse_factor"] = int(lc["ReuseFactor"])
        if "Strategy" in lc:
            o["strategy"] = str(lc["Strategy"]).capitalize()
        if "Precision" in lc:
            p = hls_precision(lc["Precision"], f"{where}.Precision")
            if isinstance(p, FixedType):
                p = LayerPrecision(weight=p, bias=p, result=p, accum=p)
            o["precision"] = p
        overrides[name] = o
    return build, (int(rf) if rf is not None else None), strategy, overrides


