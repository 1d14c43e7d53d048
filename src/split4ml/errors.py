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


class BoardError(Split4mlError):
    """A board name or board file is unknown or malformed."""


class ModelLoadError(Split4mlError):
    """A model file cannot be read."""


class BuildError(Split4mlError):
    """hls4ml conversion, project writing or C-simulation compile failed."""


class DataError(Split4mlError):
    """Input data (``--data file.npz``) is missing, malformed or of the wrong shape."""
