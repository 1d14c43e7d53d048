"""One hls4ml project per board: choose the backend, convert a stage, write the project.

A stage's layers are cut from hls4ml's conversion of the whole model (:mod:`.cut`), so each board
runs the nodes hls4ml built for those layers; the layers split4ml makes (shards, merges, wire
packing) are converted by hls4ml's own Keras handlers (:mod:`.synthetic`). Boards that hls4ml knows
as VivadoAccelerator boards (``pynq-z2``, ``zcu102``) get the VivadoAccelerator backend, whose AXI
stream wrapper carries the stage's wire types (so a board sends and receives raw fixed-point
values); other boards get the Vitis backend with their part number.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..boards import Board
from ..errors import BuildError, Split4mlError
from ..fixed import FixedType
from ..stages import Stage
from .config import check_no_auto

#: hls4ml backends split4ml writes projects for.
BACKENDS = ("VivadoAccelerator", "Vitis", "Vivado")
#: Project (top function) name of every stage's hls4ml project.
DEFAULT_PROJECT_NAME = "myproject"


def _clock(period_ns: float) -> float | int:
    return int(period_ns) if float(period_ns).is_integer() else round(float(period_ns), 6)


def backend_for(board: Board) -> tuple[str, dict[str, Any]]:
    """The hls4ml backend name and its converter keyword arguments for ``board``.

    ``VivadoAccelerator`` with ``board=<hls4ml board>`` when the board has an hls4ml board name;
    otherwise the board's declared backend if it is ``Vitis`` or ``Vivado`` (default ``Vitis``)
    with ``part=board.part``. ``clock_period`` is the board's fabric clock period in ns.
    """
    clock = _clock(board.clock_period_ns)
    if board.hls4ml_board:
        return "VivadoAccelerator", {"board": board.hls4ml_board, "part": board.part, "clock_period": clock}
    backend = board.backend if board.backend in ("Vitis", "Vivado") else "Vitis"
    return backend, {"part": board.part, "clock_period": clock}


def converter_kwargs(stage: Stage) -> tuple[str, dict[str, Any]]:
    """Backend and every keyword argument for ``hls4ml.converters.convert_from_keras_model``.

    For VivadoAccelerator the AXI stream wrapper's input/output types are :func:`axi_type` of the
    stage's wire types, so a board receives and sends raw fixed-point values and every value
    passes unchanged; hls4ml's default would be ``float``, exact only up to 24 significant bits.
    """
    backend, kwargs = backend_for(stage.board)
    kwargs = dict(kwargs, io_type=stage.build.io_type)
    if backend == "VivadoAccelerator":
        kwargs["input_type"] = axi_type(stage.input_type).hls4ml()
        kwargs["output_type"] = axi_type(stage.output_type).hls4ml()
    return backend, kwargs


def axi_type(wire: FixedType) -> FixedType:
    """The AXI stream data type carrying ``wire`` values: same integer bits and modes, the width
    rounded up to ``8 * wire.storage_bytes`` (8, 16, 32 or 64 bits).

    Every value of ``wire`` is exactly representable in it. On the board, a value ``v`` travels in
    the DMA buffer as the integer ``v * 2**(axi.width - axi.integer)`` of numpy type
    ``int<axi.width>`` (``uint`` for unsigned types).
    """
    return FixedType(width=8 * wire.storage_bytes, integer=wire.integer, signed=wire.signed,
                     rounding=wire.rounding, saturation=wire.saturation)


_AXI_TYPEDEF = re.compile(r"^(\s*typedef\s+)(u?fixed<[^>]*>|u?int<[^>]*>)(\s+T_(?:in|out)\s*;)", re.MULTILINE)


def fix_axi_typedefs(project_dir: Path | str, project_name: str = DEFAULT_PROJECT_NAME) -> None:
    """Spell the AXI wrapper's data types as C++ in ``firmware/<project>_axi.h``.

    hls4ml 1.3 writes ``typedef fixed<16,6,RND_CONV,SAT,0> T_in;`` (its config spelling, which is
    not a C++ type) when the accelerator's input/output precision is a fixed-point type; this
    rewrites it as ``ap_fixed<16,6,AP_RND_CONV,AP_SAT>``. Files without such typedefs are unchanged.
    """
    header = Path(project_dir) / "firmware" / f"{project_name}_axi.h"
    if not header.is_file():
        return
    text = header.read_text()

    def cpp(m: re.Match[str]) -> str:
        return f"{m.group(1)}{FixedType.parse(m.group(2))}{m.group(3)}"

    fixed_text = _AXI_TYPEDEF.sub(cpp, text)
    if fixed_text != text:
        header.write_text(fixed_text)


@contextlib.contextmanager
def _quiet(log: io.StringIO) -> Iterator[None]:
    """Send hls4ml's prints (layer listings, warnings) to ``log`` instead of the terminal.

    Also silences hls4ml 1.3's harmless ``UserWarning`` "Overriding attribute 'strategy' ...
    latency -> Latency" that its pointwise-convolution pass raises for every 1x1 Conv (e.g. the
    merge layer of a Conv input split): it only re-capitalises the strategy name.
    """
    with contextlib.redirect_stdout(log), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Overriding attribute 'strategy' of layer .*Pointwise",
                                category=UserWarning)
        yield


def _tail(text: str, lines: int = 15) -> str:
    rows = [r for r in text.strip().splitlines() if r.strip()]
    return "\n".join(rows[-lines:])


def _as_fixed(precision: Any) -> FixedType | None:
    try:
        return FixedType.parse(str(precision))
    except Split4mlError:
        return None


def check_wire_types(hls_model: Any, stage: Stage) -> None:
    """Raise :class:`BuildError` unless hls4ml's input/output types equal the stage's wire types.

    This is the contract that makes the chain bit-exact: the value a board sends is exactly what
    the next board's Input layer holds.
    """
    where = f"{stage.name} on {stage.board.name}"
    checks = (("input", hls_model.get_input_variables(), stage.input_type),
              ("output", hls_model.get_output_variables(), stage.output_type))
    for side, variables, want in checks:
        if len(variables) != 1:
            raise BuildError(f"{where}: hls4ml model has {len(variables)} {side}s; split4ml stages have exactly one")
        got = _as_fixed(variables[0].type.precision)
        if got is None or (got.width, got.integer, got.signed) != (want.width, want.integer, want.signed):
            raise BuildError(
                f"{where}: hls4ml's {side} type is {variables[0].type.precision} but the stage's {side} wire "
                f"type is {want}; the stage's wire type must be the type hls4ml computes there (the "
                "last layer's result type; hls4ml passes a Flatten through unchanged, so give a Flatten the "
                "result type of the layer before it)"
            )


def conversion_backend(backend: str) -> str:
    """The backend a stage is converted with: VivadoAccelerator runs the Vivado backend's passes
    (and hls4ml refuses some layers, e.g. HGQ's quantizers, under its name), so a PYNQ stage is
    converted by the Vivado backend and written by VivadoAccelerator's writer."""
    return "Vivado" if backend == "VivadoAccelerator" else backend


def convert_stage(stage: Stage, out_dir: Path | str, project_name: str = DEFAULT_PROJECT_NAME,
                  write: bool = True) -> Any:
    """Convert ``stage`` to an hls4ml ``ModelGraph`` whose project lives in ``out_dir``.

    The project files are written (``write=True``) but not compiled. Every precision is concrete
    (checked by :func:`~split4ml.hls.config.check_no_auto`) and the input/output types equal the
    stage's wire types (:func:`check_wire_types`).

    Raises:
        BuildError: naming the stage, board and, where hls4ml tells, the layer.
    """
    from .cut import as_accelerator, stage_model

    out = Path(out_dir)
    where = f"{stage.name} on {stage.board.name}"
    log = io.StringIO()
    backend, kwargs = converter_kwargs(stage)
    conv_kwargs = {k: kwargs[k] for k in ("part", "clock_period", "io_type") if k in kwargs}
    out.mkdir(parents=True, exist_ok=True)
    try:
        with _quiet(log):
            hls_model = stage_model(stage.graph, stage.settings, stage.build, stage.input_type,
                                    conversion_backend(backend), conv_kwargs, str(out), project_name, where)
            if backend == "VivadoAccelerator":
                as_accelerator(hls_model, kwargs["board"], kwargs["part"], kwargs["clock_period"], kwargs["io_type"],
                               kwargs["input_type"], kwargs["output_type"])
    except Split4mlError:
        raise
    except Exception as exc:  # hls4ml raises bare Exceptions / AssertionErrors
        raise BuildError(
            f"{where} ({backend}, {kwargs}): hls4ml conversion failed: {type(exc).__name__}: {exc}\n"
            f"{_tail(log.getvalue())}"
        ) from exc
    check_no_auto(hls_model, where=where)
    check_wire_types(hls_model, stage)
    if write:
        try:
            with _quiet(log):
                hls_model.write()
            fix_axi_typedefs(out, project_name)
        except Exception as exc:
            raise BuildError(
                f"{where}: hls4ml could not write the project to {out}: {type(exc).__name__}: {exc}"
            ) from exc
    return hls_model
