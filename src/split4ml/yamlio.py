"""Reading user YAML files with errors that say which file and what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import Split4mlError


def read_yaml(path: str | Path, what: str, error: type[Split4mlError] = Split4mlError, hint: str = "") -> Any:
    """Parse the YAML file ``path``; a missing or malformed file raises ``error`` naming it as ``what``."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{what} {p} does not exist" + (f"; {hint}" if hint else ""))
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise error(f"{what} {p} is not valid YAML: {exc}") from exc
