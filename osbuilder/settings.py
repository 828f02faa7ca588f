"""Settings declared once: each field's flag, help, parser and the commands that take it.

BuildConfig's fields carry this metadata; the CLI, the JSON summary and --help are all
derived from it, so they cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Callable


def comma_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


@dataclass(frozen=True)
class Setting:
    help: str
    flag: str | None = None  # defaults to --<field-name-with-dashes>
    short: str | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    parse: Callable[[str], Any] | None = None
    boolean: bool = False  # --x / --no-x when default is True, plain switch otherwise
    required: bool = False
    commands: tuple[str, ...] = ("build", "rootfs")


def setting(default: Any = MISSING, **kwargs: Any) -> Any:
    meta = {"setting": Setting(**kwargs)}
    if default is MISSING:
        return field(metadata=meta)
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for sequence defaults")
    return field(default=default, metadata=meta)


def settings_of(cls: type) -> list[tuple[dataclasses.Field[Any], Setting]]:
    return [(f, f.metadata["setting"]) for f in dataclasses.fields(cls) if "setting" in f.metadata]


def flag_of(f: dataclasses.Field[Any], s: Setting) -> str:
    return s.flag or "--" + f.name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, cls: type, command: str) -> None:
    """Add one argparse option per setting that `command` takes."""
    for f, s in settings_of(cls):
        if command not in s.commands:
            continue
        names = [flag_of(f, s)] + ([s.short] if s.short else [])
        kwargs: dict[str, Any] = {"dest": f.name, "help": s.help, "default": None}
        if s.boolean:
            default = f.default
            kwargs["action"] = argparse.BooleanOptionalAction if default is True else "store_true"
            kwargs["help"] = f"{s.help} (default: {'on' if default else 'off'})"
        else:
            kwargs["metavar"] = s.metavar or ("|".join(s.choices) if s.choices else f.name.upper())
            if s.choices:
                kwargs["choices"] = s.choices
            if s.parse:
                kwargs["type"] = s.parse
            if s.required:
                kwargs["required"] = True
        parser.add_argument(*names, **kwargs)


def values_from_args(args: argparse.Namespace, cls: type, command: str) -> dict[str, Any]:
    """The settings the user actually gave on the command line."""
    given = {}
    for f, s in settings_of(cls):
        if command in s.commands:
            value = getattr(args, f.name, None)
            if value is not None:
                given[f.name] = value
    return given


def to_json(obj: Any) -> dict[str, Any]:
    """A JSON-ready dict of every setting, in declaration order."""
    out: dict[str, Any] = {}
    for f, _ in settings_of(type(obj)):
        value = getattr(obj, f.name)
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out
