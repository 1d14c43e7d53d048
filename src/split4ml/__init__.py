"""split4ml: split a neural network that is too big for one FPGA into a pipeline of boards."""

from .errors import (
    BoardError,
    BuildError,
    DataError,
    InfeasibleError,
    ModelLoadError,
    PlanError,
    Split4mlError,
    UnsupportedLayerError,
)

__version__ = "0.1.0"

__all__ = [
    "BoardError",
    "BuildError",
    "DataError",
    "InfeasibleError",
    "ModelLoadError",
    "PlanError",
    "Split4mlError",
    "UnsupportedLayerError",
    "__version__",
]
