"""Fixed-point types: parse, print (hls4ml and Vivado HLS spelling), and quantise with numpy.

A :class:`FixedType` is the value-level twin of ``ap_fixed<W,I,Q,O>`` / ``ap_ufixed``. It is used
for every precision in the IR and in plans, so that the whole tool agrees on one spelling, and for
the wire format of the runtime (raw two's-complement integers of ``width`` bits).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from .errors import PlanError

_ROUNDING = {"TRN", "TRN_ZERO", "RND", "RND_ZERO", "RND_INF", "RND_MIN_INF", "RND_CONV"}
_SATURATION = {"WRAP", "SAT", "SAT_ZERO", "SAT_SYM"}

_FIXED_RE = re.compile(
    r"^\s*(?P<kind>ap_fixed|ap_ufixed|fixed|ufixed)\s*<\s*(?P<w>-?\d+)\s*,\s*(?P<i>-?\d+)\s*"
    r"(?:,\s*(?:AP_)?(?P<q>[A-Z_]+)\s*)?(?:,\s*(?:AP_)?(?P<o>[A-Z_]+)\s*)?(?:,\s*(?P<n>\d+)\s*)?>\s*$"
)
_INT_RE = re.compile(r"^\s*(?P<kind>ap_int|ap_uint|int|uint)\s*<\s*(?P<w>\d+)\s*>\s*$")


@dataclass(frozen=True)
class FixedType:
    """``ap_fixed<width, integer, rounding, saturation>`` (signed) or ``ap_ufixed`` (unsigned).

    ``integer`` counts the integer bits including the sign bit, as in Vivado HLS.
    """

    width: int
    integer: int
    signed: bool = True
    rounding: str = "TRN"
    saturation: str = "WRAP"

    def __post_init__(self) -> None:
        if self.width < 1 or self.width > 1024:
            raise PlanError(f"fixed-point width {self.width} is out of range 1..1024")
        if self.rounding not in _ROUNDING:
            raise PlanError(f"unknown rounding mode {self.rounding!r}; use one of {sorted(_ROUNDING)}")
        if self.saturation not in _SATURATION:
            raise PlanError(f"unknown saturation mode {self.saturation!r}; use one of {sorted(_SATURATION)}")

    # ----------------------------------------------------------------- parsing / printing
    @classmethod
    def parse(cls, text: str | FixedType) -> FixedType:
        """Parse ``ap_fixed<16,6>``, ``fixed<16,6,RND_CONV,SAT>``, ``ap_int<8>``, ``ufixed<8,0>``."""
        if isinstance(text, FixedType):
            return text
        s = str(text)
        m = _FIXED_RE.match(s)
        if m:
            signed = m["kind"] in ("ap_fixed", "fixed")
            return cls(
                width=int(m["w"]),
                integer=int(m["i"]),
                signed=signed,
                rounding=m["q"] or "TRN",
                saturation=m["o"] or "WRAP",
            )
        m = _INT_RE.match(s)
        if m:
            w = int(m["w"])
            return cls(width=w, integer=w, signed=m["kind"] in ("ap_int", "int"))
        raise PlanError(
            f"cannot parse fixed-point type {s!r}; write it as ap_fixed<W,I> or "
            "ap_fixed<W,I,AP_RND_CONV,AP_SAT> (or hls4ml's fixed<W,I,RND_CONV,SAT>)"
        )

    @property
    def fractional(self) -> int:
        return self.width - self.integer

    def hls4ml(self) -> str:
        """hls4ml config spelling, e.g. ``fixed<16,6,RND_CONV,SAT>``."""
        kind = "fixed" if self.signed else "ufixed"
        if self.rounding == "TRN" and self.saturation == "WRAP":
            return f"{kind}<{self.width},{self.integer}>"
        return f"{kind}<{self.width},{self.integer},{self.rounding},{self.saturation}>"

    def __str__(self) -> str:
        """Vivado HLS spelling, e.g. ``ap_fixed<16,6,AP_RND_CONV,AP_SAT>``."""
        kind = "ap_fixed" if self.signed else "ap_ufixed"
        if self.rounding == "TRN" and self.saturation == "WRAP":
            return f"{kind}<{self.width},{self.integer}>"
        return f"{kind}<{self.width},{self.integer},AP_{self.rounding},AP_{self.saturation}>"

    # ----------------------------------------------------------------- value range
    @property
    def lsb(self) -> float:
        return math.ldexp(1.0, -self.fractional)

    @property
    def min_value(self) -> float:
        return -math.ldexp(1.0, self.integer - 1) if self.signed else 0.0

    @property
    def max_value(self) -> float:
        top = math.ldexp(1.0, self.integer - 1) if self.signed else math.ldexp(1.0, self.integer)
        return top - self.lsb

    @property
    def storage_bytes(self) -> int:
        """Bytes per value on the wire: the width rounded up to 1, 2, 4 or 8 bytes."""
        for b in (1, 2, 4, 8):
            if self.width <= 8 * b:
                return b
        raise PlanError(f"{self} is wider than 64 bits and cannot be sent on the wire")

    @property
    def exact_in_float64(self) -> bool:
        """True when every value of this type is exactly representable as a float64."""
        return self.width <= 53

    # ----------------------------------------------------------------- numpy helpers
    def to_int(self, values: np.ndarray) -> np.ndarray:
        """Raw integers (value * 2**fractional) of values already representable in this type.

        Raises :class:`PlanError` if a value is not on the grid or out of range; this is how the
        runtime refuses to send data that would be silently changed.
        """
        scaled = np.asarray(values, dtype=np.float64) * math.ldexp(1.0, self.fractional)
        ints = np.rint(scaled)
        if not np.array_equal(ints, scaled):
            raise PlanError(f"values are not representable in {self}: they are not multiples of its LSB")
        lo = self.min_value * math.ldexp(1.0, self.fractional)
        hi = self.max_value * math.ldexp(1.0, self.fractional)
        if ints.size and (ints.min() < lo or ints.max() > hi):
            raise PlanError(f"values are out of the range of {self} [{self.min_value}, {self.max_value}]")
        return ints.astype(np.int64)

    def from_int(self, ints: np.ndarray) -> np.ndarray:
        return np.asarray(ints, dtype=np.float64) * self.lsb

    def quantize(self, values: np.ndarray) -> np.ndarray:
        """Quantise float values into this type (rounding and saturation as declared).

        Supports TRN, RND (half up), RND_CONV (half to even) and TRN_ZERO rounding; WRAP and SAT.
        """
        x = np.asarray(values, dtype=np.float64) * math.ldexp(1.0, self.fractional)
        if self.rounding == "TRN":
            q = np.floor(x)
        elif self.rounding == "RND":
            q = np.floor(x + 0.5)
        elif self.rounding == "RND_CONV":
            q = np.rint(x)
        elif self.rounding == "TRN_ZERO":
            q = np.trunc(x)
        else:
            raise PlanError(f"quantize() does not model rounding mode {self.rounding}")
        lo = round(self.min_value * math.ldexp(1.0, self.fractional))
        hi = round(self.max_value * math.ldexp(1.0, self.fractional))
        if self.saturation == "WRAP":
            span = 1 << self.width
            q = np.mod(q - lo, span) + lo
        else:
            q = np.clip(q, lo, hi)
        return q * self.lsb


def fixed(text: str | FixedType) -> FixedType:
    """Shorthand for :meth:`FixedType.parse`."""
    return FixedType.parse(text)
