"""The board catalogue: FPGA boards as data (YAML), with resources, clock, shell and link.

Built-in boards live in ``boards/data/*.yaml``. Users add their own with a YAML file of the same
form (one board, or ``boards: [...]``) passed as ``--board-file`` or by giving the path of the file
in place of a board name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import BoardError
from ..yamlio import read_yaml

RESOURCES = ("lut", "ff", "dsp", "bram18")
DEFAULT_CAP = 0.85


@dataclass(frozen=True)
class Link:
    """The network link out of a board: a fixed cost per hop plus a bandwidth."""

    bandwidth_mbps: float
    latency_us: float
    medium: str = ""

    def transfer_us(self, n_bytes: float) -> float:
        """Serialisation time of ``n_bytes`` on this link, in microseconds (no fixed cost)."""
        return n_bytes * 8.0 / self.bandwidth_mbps  # bits / (Mbit/s) = us

    def hop_us(self, n_bytes: float) -> float:
        """Latency of one hop carrying ``n_bytes``: fixed cost plus serialisation, in microseconds."""
        return self.latency_us + self.transfer_us(n_bytes)


@dataclass(frozen=True)
class Board:
    """One FPGA board type."""

    name: str
    part: str
    lut: int
    ff: int
    dsp: int
    bram18: int
    uram: int
    clock_mhz: float
    backend: str
    link: Link
    hls4ml_board: str | None = None
    family: str = ""
    shell_lut: float = 0.0
    shell_ff: float = 0.0
    shell_dsp: float = 0.0
    shell_bram18: float = 0.0

    def capacity(self, resource: str) -> int:
        """Total amount of ``resource`` (lut, ff, dsp, bram18) on the device."""
        return int(getattr(self, resource))

    def capped(self, resource: str, cap: float) -> float:
        """Usable amount of ``resource`` under a utilisation cap (0 < cap <= 1)."""
        return self.capacity(resource) * cap

    @property
    def clock_period_ns(self) -> float:
        return 1000.0 / self.clock_mhz

    def cycles_to_us(self, cycles: float) -> float:
        return cycles / self.clock_mhz


def _req(d: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise BoardError(f"{where}: missing field '{key}'; see the built-in boards (split4ml boards) for the form")
    return d[key]


#: What a board's name, part and hls4ml board may hold: they are written into build scripts and hls4ml
#: projects, so nothing there may be read as shell or Tcl.
SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")


def safe_name(value: str, where: str) -> str:
    """``value`` if it holds only letters, digits, ``.``, ``_`` and ``-`` (:data:`SAFE_NAME`), else
    :class:`BoardError` naming ``where``."""
    if not SAFE_NAME.fullmatch(value):
        raise BoardError(f"{where} {value!r} may hold only letters, digits, '.', '_' and '-' (it is written into "
                         "build scripts); rename it in the board file")
    return value


def board_from_dict(d: Mapping[str, Any], where: str = "board") -> Board:
    """Build a :class:`Board` from its YAML mapping; errors name the field."""
    if not isinstance(d, Mapping):
        raise BoardError(f"{where}: expected a mapping with name, part, resources, clock_mhz, link")
    name = str(_req(d, "name", where))
    safe_name(name, f"{where}: name")
    where = f"{where} '{name}'"
    safe_name(str(_req(d, "part", where)), f"{where}: part")
    if d.get("hls4ml_board") is not None:
        safe_name(str(d["hls4ml_board"]), f"{where}: hls4ml_board")
    res = _req(d, "resources", where)
    link = _req(d, "link", where)
    shell = d.get("shell") or {}
    try:
        vals = {r: int(_req(res, r, f"{where}.resources")) for r in RESOURCES}
        if any(v <= 0 for v in vals.values()):
            raise BoardError(f"{where}.resources: every resource must be positive, got {vals}")
        return Board(
            name=name,
            part=str(_req(d, "part", where)),
            **vals,
            uram=int(res.get("uram", 0)),
            clock_mhz=float(_req(d, "clock_mhz", where)),
            backend=str(d.get("backend", "Vitis")),
            hls4ml_board=d.get("hls4ml_board"),
            family=str(d.get("family", "")),
            link=Link(
                bandwidth_mbps=float(_req(link, "bandwidth_mbps", f"{where}.link")),
                latency_us=float(_req(link, "latency_us", f"{where}.link")),
                medium=str(link.get("medium", "")),
            ),
            shell_lut=float(shell.get("lut", 0)),
            shell_ff=float(shell.get("ff", 0)),
            shell_dsp=float(shell.get("dsp", 0)),
            shell_bram18=float(shell.get("bram18", 0)),
        )
    except (TypeError, ValueError) as exc:
        raise BoardError(f"{where}: a field has the wrong type ({exc}); numbers must be numbers") from exc


def _builtin() -> dict[str, Board]:
    out: dict[str, Board] = {}
    for entry in resources.files(__package__).joinpath("data").iterdir():
        if entry.name.endswith(".yaml"):
            b = board_from_dict(yaml.safe_load(entry.read_text()), where=f"built-in {entry.name}")
            out[b.name] = b
    return out


def load_board_file(path: str | Path) -> dict[str, Board]:
    """Read one board, or ``boards: [...]``, from a user YAML file."""
    p = Path(path)
    data = read_yaml(p, "board file", BoardError)
    items = data.get("boards", [data]) if isinstance(data, Mapping) else data
    if not isinstance(items, list):
        raise BoardError(f"board file {p}: expected a board mapping or 'boards: [...]'")
    boards = [board_from_dict(item, where=f"{p}: boards[{i}]") for i, item in enumerate(items)]
    return {b.name: b for b in boards}


def catalogue(board_files: list[str | Path] | tuple[str | Path, ...] = ()) -> dict[str, Board]:
    """All known boards: built-ins, then user files (a user board may replace a built-in)."""
    boards = _builtin()
    for f in board_files:
        boards.update(load_board_file(f))
    return boards


def get_board(name: str, board_files: list[str | Path] | tuple[str | Path, ...] = ()) -> Board:
    """Look a board up by name, in any case (``PYNQ-Z2`` is ``pynq-z2``) unless two boards' names differ
    only in case, or load it from a YAML path given in place of the name."""
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        found = load_board_file(name)
        if len(found) != 1:
            raise BoardError(f"board file {name} holds {len(found)} boards; pass --board NAME --board-file {name}")
        return next(iter(found.values()))
    boards = catalogue(board_files)
    if name in boards:
        return boards[name]
    same = [b for b in boards if b.lower() == name.lower()]
    if len(same) == 1:
        return boards[same[0]]
    if same:
        raise BoardError(f"board {name!r} matches {', '.join(sorted(same))}, whose names differ only in case; "
                         "give the exact name")
    raise BoardError(f"unknown board {name!r}; known boards: {', '.join(sorted(boards))}. "
                     "Add your own with --board-file my_board.yaml")
