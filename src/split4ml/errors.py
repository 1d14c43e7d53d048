"""The one exception family of split4ml.

Every message says what is wrong, where (layer, board, plan field or YAML path) and what to do
about it. The CLI prints the message without a traceback and exits with code 2.
"""

from __future__ import annotations


class Split4mlError(Exception):
    """Base class of every error split4ml raises on purpose."""


class UnsupportedLayerError(Split4mlError):
    """A model contains a layer (or option of a layer) that split4ml cannot convert."""


class InfeasibleError(Split4mlError):
    """No plan satisfies the board resources, caps and board/stage counts."""


class PlanError(Split4mlError):
    """A plan file (hand-written or generated) is invalid; the message names the YAML path."""


class TimeLimitError(PlanError):
    """A planner's solver stopped at its time limit before it found any plan."""


class BoardError(Split4mlError):
    """A board name or board file is unknown or malformed."""


class ModelLoadError(Split4mlError):
    """A model file cannot be read."""


class BuildError(Split4mlError):
    """hls4ml conversion, project writing or C-simulation compile failed."""


class DataError(Split4mlError):
    """Input data (``--data file.npz``) is missing, malformed or of the wrong shape."""


class FrameError(Split4mlError):
    """A runtime frame is malformed or not meant for its receiver (bad magic, version, plan hash,
    CRC, destination, type or shape); it is rejected and counted, never fed to a model.

    ``reason`` is a short key (``crc``, ``plan_hash``, ``shape``...) used in the counts.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class RuntimeFault(Split4mlError):
    """The distributed runtime cannot start or continue: a node cannot bind or load its driver,
    never reports, or dies without ``--restart``; the message names the node and the cause."""
