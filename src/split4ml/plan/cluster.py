"""Clusters of boards on hand: types, counts, order, links (``plan --cluster cluster.yaml``).

The file::

    boards:                       # the boards on hand, by type (names from `split4ml boards`)
      - {type: pynq-z2, count: 4}
      - {type: zcu102, count: 1, link: {bandwidth_mbps: 940, latency_us: 100}}   # link optional
    order: free                   # free: any order (default); fixed: the chain runs along the boards
                                  # as listed (entries expanded by count), skipping unused ones
    links: {bandwidth_mbps: 940, latency_us: 60}   # optional: every board's outgoing link
    board_files: [my_boards.yaml] # optional: extra board catalogue files (relative to this file)

Without ``links``/``link`` each board keeps its catalogue link (fixed cost per hop, bandwidth).
A link given here replaces that board type's link for planning; a plan file records board names
only, so when a plan is read back it is re-priced with the catalogue's links.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..boards import Board, Link, get_board
from ..errors import PlanError, Split4mlError
from ..estimate.base import Cost
from ..settings import choice
from ..yamlio import read_yaml
from .joint import BoardPool

ORDERS = ("free", "fixed")


@dataclass(frozen=True)
class Cluster:
    """The boards on hand.

    Attributes:
        entries: ``(board, count)`` per entry of the file, in file order (a type may repeat in
            fixed order).
        order: ``free`` (stages may use the boards in any order) or ``fixed`` (along the entries).
        source: where it came from (for messages).
        board_files: extra catalogue files the boards came from.
    """

    entries: tuple[tuple[Board, int], ...]
    order: str = "free"
    source: str = "cluster"
    board_files: tuple[str, ...] = ()

    @property
    def types(self) -> tuple[Board, ...]:
        """The distinct board types, in order of first appearance."""
        out: list[Board] = []
        for b, _ in self.entries:
            if all(o.name != b.name for o in out):
                out.append(b)
        return tuple(out)

    @property
    def n_boards(self) -> int:
        return sum(c for _, c in self.entries)

    @property
    def sequence(self) -> tuple[Board, ...]:
        """The boards one by one, entries expanded by count (the chain in fixed order)."""
        return tuple(b for b, c in self.entries for _ in range(c))

    def pool(self, shells: Sequence[Cost] | None = None) -> BoardPool:
        """The solver's view; ``shells`` per type as :attr:`types` (default: the catalogue's)."""
        types = self.types
        index = {b.name: i for i, b in enumerate(types)}
        kw: dict[str, Any] = {"shells": tuple(shells)} if shells is not None else {}
        if self.order == "fixed":
            return BoardPool(types=types, order=tuple(index[b.name] for b in self.sequence), **kw)
        counts = [0] * len(types)
        for b, c in self.entries:
            counts[index[b.name]] += c
        return BoardPool(types=types, counts=tuple(counts), **kw)

    def describe(self) -> str:
        return ", ".join(f"{c} x {b.name}" for b, c in self.entries) + f" ({self.order} order)"


def homogeneous(board: Board, count: int) -> Cluster:
    """``count`` boards of one type."""
    return Cluster(entries=((board, int(count)),), order="free", source=f"--board {board.name}")


def _link(d: Any, where: str, base: Link) -> Link:
    if not isinstance(d, Mapping):
        raise PlanError(f"{where}: expected a mapping with bandwidth_mbps and/or latency_us")
    extra = sorted(set(d) - {"bandwidth_mbps", "latency_us", "medium"})
    if extra:
        raise PlanError(f"{where}: unknown field(s) {extra}; a link has bandwidth_mbps, latency_us, medium")
    try:
        bw = float(d.get("bandwidth_mbps", base.bandwidth_mbps))
        lat = float(d.get("latency_us", base.latency_us))
    except (TypeError, ValueError) as exc:
        raise PlanError(f"{where}: bandwidth_mbps and latency_us must be numbers ({exc})") from exc
    if bw <= 0 or lat < 0:
        raise PlanError(f"{where}: bandwidth_mbps must be > 0 and latency_us >= 0, got {bw} and {lat}")
    return Link(bandwidth_mbps=bw, latency_us=lat, medium=str(d.get("medium", base.medium)))


def cluster_from_dict(data: Any, source: str = "cluster", base_dir: Path = Path("."),
                      board_files: Sequence[str] = ()) -> Cluster:
    """Read a cluster mapping (the YAML form in the module docstring); errors name the field."""
    if not isinstance(data, Mapping):
        raise PlanError(f"{source}: expected a mapping with 'boards: [{{type: pynq-z2, count: 4}}, ...]'")
    unknown = sorted(set(data) - {"boards", "order", "links", "board_files"})
    if unknown:
        raise PlanError(f"{source}: unknown field(s) {unknown}; a cluster has boards, order, links, board_files")
    order = choice(str(data.get("order", "free")), ORDERS, f"{source}: order",
                   hint="use free (any order) or fixed (the chain runs along the boards as listed)")
    files = [*board_files, *(str(base_dir / f) for f in (data.get("board_files") or []))]
    items = data.get("boards")
    if not isinstance(items, list) or not items:
        raise PlanError(f"{source}: boards: expected a non-empty list such as [{{type: pynq-z2, count: 4}}]")
    entries: list[tuple[Board, int]] = []
    for i, item in enumerate(items):
        where = f"{source}: boards[{i}]"
        if not isinstance(item, Mapping):
            raise PlanError(f"{where}: expected a mapping {{type: NAME, count: N}}")
        extra = sorted(set(item) - {"type", "count", "link"})
        if extra:
            raise PlanError(f"{where}: unknown field(s) {extra}; an entry has type, count, link")
        if "type" not in item:
            raise PlanError(f"{where}.type: missing; name a board type (see 'split4ml boards')")
        try:
            b = get_board(str(item["type"]), tuple(files))
        except Split4mlError as exc:
            raise PlanError(f"{where}.type: {exc}") from exc
        count = item.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise PlanError(f"{where}.count: {count!r} must be a whole number >= 1; remove the entry if there are "
                            "no such boards")
        link_d = item.get("link", data.get("links"))
        if link_d is not None:
            b = replace(b, link=_link(link_d, f"{where}.link" if "link" in item else f"{source}: links", b.link))
        entries.append((b, int(count)))
    seen: dict[str, Board] = {}
    for i, (b, _) in enumerate(entries):
        if b.name in seen and seen[b.name] != b:
            raise PlanError(f"{source}: boards[{i}]: type {b.name!r} appears twice with different links; give one link "
                            "per type")
        seen[b.name] = b
    return Cluster(entries=tuple(entries), order=order, source=source, board_files=tuple(files))


def read_cluster(path: str | Path, board_files: Sequence[str] = ()) -> Cluster:
    """Read ``cluster.yaml`` (see the module docstring)."""
    p = Path(path)
    data = read_yaml(p, "cluster file", PlanError, hint="pass the path of a cluster YAML file to --cluster")
    return cluster_from_dict(data, source=str(p), base_dir=p.parent, board_files=board_files)
