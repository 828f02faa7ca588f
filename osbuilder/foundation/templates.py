"""Rendering of every file osbuilder writes into a guest (templates/*.j2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2

from osbuilder.foundation.resources import templates_dir


def _yaml_str(value: Any) -> str:
    # A JSON string is a valid YAML double-quoted scalar, escapes included.
    return json.dumps(str(value))


def _toml_str(value: Any) -> str:
    # A JSON string is a valid TOML basic string (the same escapes).
    return json.dumps(str(value))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return _toml_str(value)


class Templates:
    def __init__(self, directory: Path | None = None) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(directory or templates_dir())),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            autoescape=False,
        )
        self.env.filters["yaml_str"] = _yaml_str
        self.env.filters["toml_str"] = _toml_str
        self.env.filters["toml_value"] = _toml_value

    def render(self, name: str, **context: Any) -> str:
        return self.env.get_template(name).render(**context)
