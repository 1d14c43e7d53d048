"""hls4ml settings of a layer and of a whole build: reuse factor, strategy, precisions, io type.

These are plain values. The planner chooses them, the plan file records them, and the hls
module writes them into each board's hls4ml config, so the same numbers flow from estimate to
firmware.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .errors import PlanError, Split4mlError
from .fixed import FixedType

STRATEGIES = ("Latency", "Resource")
IO_TYPES = ("io_parallel", "io_stream")

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
