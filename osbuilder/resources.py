"""Where the data files that ship beside the package live (templates/, distros/)."""

from __future__ import annotations

import os
from pathlib import Path

_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def templates_dir() -> Path:
    return Path(os.environ.get("OSBUILDER_TEMPLATES_DIR", _PROJECT_ROOT / "templates"))


def recipes_dir() -> Path:
    return Path(os.environ.get("OSBUILDER_RECIPES_DIR", _PROJECT_ROOT / "distros"))
