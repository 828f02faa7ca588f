"""Where the data files osbuilder ships live (recipes and templates).

An installed wheel carries them inside the package (osbuilder/data/, see setup.py); a
checkout keeps them at the top of the repository. Environment variables override both."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent  # osbuilder/, this module is in osbuilder/foundation/
_CHECKOUT = _PACKAGE.parent


def _data_dir(name: str) -> Path:
    installed = _PACKAGE / "data" / name
    return installed if installed.is_dir() else _CHECKOUT / name


def templates_dir() -> Path:
    return Path(os.environ.get("OSBUILDER_TEMPLATES_DIR") or _data_dir("templates"))


def recipes_dir() -> Path:
    return Path(os.environ.get("OSBUILDER_RECIPES_DIR") or _data_dir("distros"))


def schemas_dir() -> Path:
    return _data_dir("schemas")
