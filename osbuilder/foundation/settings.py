"""Settings declared once: each field's flag, config-file key, parser, choices and help.

Each stage's options dataclass carries this metadata on its fields. The command line,
`--config FILE.toml` (the same keys as the flags, without the dashes), the JSON summary
and --help are all derived from it, so they cannot drift apart. Choices come from the
registries (codecs, filesystems, packers, arches), never from literal lists here.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import tomllib
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from osbuilder.foundation.errors import UserError


def comma_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def as_path(text: str) -> Path:
    return Path(text)


@dataclass(frozen=True)
class Setting:
    help: str
    flag: str | None = None  # defaults to --<field-name-with-dashes>
    short: str | None = None
    metavar: str | None = None
    choices: Callable[[], Iterable[str]] | None = None  # read from a registry when the parser is made
    parse: Callable[[str], Any] | None = None
    # --x / --no-x when the default is True or None (decided later from other settings), a
    # plain switch when it is False.
    boolean: bool = False
    required: bool = False  # checked after flags and the config file are merged
    positional: bool = False
    many: bool = False  # a comma-separated list on the command line, a TOML list in a file
    repeatable: bool = False  # with many: the flag may also be given again and again

    def choice_list(self) -> tuple[str, ...] | None:
        return tuple(self.choices()) if self.choices else None

    def parse_many(self, text: str) -> tuple[str, ...]:
        """argparse's type for a list setting: split, then check each item's choice."""
        items = comma_list(text)
        choices = self.choice_list()
        for item in items:
            if choices and item not in choices:
                raise argparse.ArgumentTypeError(f"invalid choice: '{item}' (choose from {', '.join(choices)})")
        return items


def setting(default: Any = MISSING, **kwargs: Any) -> Any:
    meta = {"setting": Setting(**kwargs)}
    if default is MISSING:
        return field(default=None, metadata=meta)
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for sequence defaults")
    return field(default=default, metadata=meta)


def settings_of(cls: type) -> list[tuple[dataclasses.Field[Any], Setting]]:
    return [(f, f.metadata["setting"]) for f in dataclasses.fields(cls) if "setting" in f.metadata]


def is_required(cls: type, f: dataclasses.Field[Any], s: Setting) -> bool:
    """Required by its declaration, or by the options class that takes a shared setting."""
    return s.required or f.name in getattr(cls, "required_settings", ())


def flag_of(f: dataclasses.Field[Any], s: Setting) -> str:
    return s.flag or "--" + f.name.replace("_", "-")


def key_of(f: dataclasses.Field[Any], s: Setting) -> str:
    """The config-file key: the flag without its dashes."""
    return f.name.replace("_", "-") if s.positional else flag_of(f, s).removeprefix("--")


def add_arguments(parser: argparse.ArgumentParser, classes: Iterable[type]) -> None:
    """One argparse option per setting of `classes`. Defaults stay None so that only what
    the user typed overrides the config file."""
    for cls in classes:
        for f, s in settings_of(cls):
            kwargs: dict[str, Any] = {"help": s.help + (" (required)" if is_required(cls, f, s) else ""),
                                      "default": None}
            if s.positional:
                parser.add_argument(f.name, metavar=s.metavar or f.name.upper(), type=s.parse or str, nargs="?",
                                    help=s.help)
                continue
            names = [flag_of(f, s)] + ([s.short] if s.short else [])
            kwargs["dest"] = f.name
            if s.boolean:
                kwargs["action"] = argparse.BooleanOptionalAction if f.default is not False else "store_true"
                if f.default is not None:  # a None default's help says what decides it
                    kwargs["help"] = f"{s.help} (default: {'on' if f.default else 'off'})"
            else:
                shown = _shown_default(f.default)
                if shown is not None and "default" not in s.help:
                    kwargs["help"] = f"{kwargs['help']} (default: {shown})"
                choices = s.choice_list()
                kwargs["metavar"] = s.metavar or ((",".join if s.many else "|".join)(choices) if choices
                                                  else f.name.upper())
                if s.many:
                    kwargs["type"] = s.parse_many
                    if s.repeatable:
                        kwargs["action"] = "append"
                else:
                    kwargs["choices"] = choices
                    kwargs["type"] = s.parse
            parser.add_argument(*names, **kwargs)


def _shown_default(default: Any) -> str | None:
    """A setting's default as --help shows it, or None when it has none worth showing."""
    if default is None or default is dataclasses.MISSING or default in ((), ""):
        return None
    if isinstance(default, tuple):
        return ",".join(str(item) for item in default)
    return str(default)


def _repeatable(f: dataclasses.Field[Any]) -> bool:
    return f.metadata["setting"].repeatable


def values_from_args(args: argparse.Namespace, classes: Iterable[type]) -> dict[str, Any]:
    """The settings the user actually gave on the command line."""
    given = {}
    for cls in classes:
        for f, _ in settings_of(cls):
            value = getattr(args, f.name, None)
            if _repeatable(f) and value is not None:
                value = tuple(item for group in value for item in group)
            if value is not None and value is not False:
                given[f.name] = value
            elif value is False and f.default is not False:
                given[f.name] = False  # --no-x
    return given


def _value_from_file(path: Path, key: str, f: dataclasses.Field[Any], s: Setting, value: Any) -> Any:
    where = f"config file {path}: key '{key}'"
    if s.boolean:
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false", f"write {key} = true")
        return value
    if s.many:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = tuple(value)
        elif isinstance(value, str):
            value = comma_list(value)
        else:
            raise UserError(f"{where} must be a list of strings", f'write {key} = ["..."]')
    elif isinstance(value, bool) or not isinstance(value, (str, int)):
        raise UserError(f"{where} must be a string or a number", "fix its value")
    elif s.parse is not None:
        try:
            value = s.parse(str(value))
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise UserError(f"{where}: {exc}", "fix its value") from None
    choices = s.choice_list()
    if choices:
        for item in value if isinstance(value, tuple) else (value,):
            if item not in choices:
                raise UserError(f"{where}: '{item}' is not one of {', '.join(choices)}", "fix its value")
    return value


def read_toml(path: Path) -> dict[str, Any]:
    """A --config file's table; a missing, unreadable or malformed file is bad input."""
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"config file '{path}' does not exist", "pass --config an existing TOML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"config file '{path}' cannot be read ({exc})", "check the file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {path}: invalid TOML ({exc})", "fix the syntax") from None


def values_from_file(path: Path, classes: Iterable[type], all_classes: Iterable[type]) -> dict[str, Any]:
    """Settings from a TOML file whose keys are the flags' names. Keys of other commands'
    settings are ignored (one file can serve rootfs, image and build); unknown keys are errors."""
    return values_from_mapping(read_toml(path), path, classes, all_classes)


def values_from_mapping(data: dict[str, Any], path: Path | str, classes: Iterable[type],
                        all_classes: Iterable[type]) -> dict[str, Any]:
    """Settings from one table of a TOML file (`path` names it in errors)."""
    classes, all_classes = tuple(classes), tuple(all_classes)
    mine = {key_of(f, s): (f, s) for cls in classes for f, s in settings_of(cls)}
    known = {key_of(f, s) for cls in all_classes for f, s in settings_of(cls)}
    values = {}
    for given, value in data.items():
        # TOML's natural spelling (probe_agent) names the same setting as the flag's (probe-agent).
        key = given.replace("_", "-")
        if key in mine:
            f, s = mine[key]
            values[f.name] = _value_from_file(path, given, f, s, value)
        elif key not in known:
            near = difflib.get_close_matches(key, sorted(known), n=1)
            raise UserError(f"config file {path}: unknown key '{given}'",
                            f"did you mean '{near[0]}'?" if near else
                            f"use the name of a flag without its dashes, e.g. {next(iter(sorted(mine)), 'distro')}")
    return values


def build_options(cls: type, values: dict[str, Any]) -> Any:
    """An options dataclass from settings given by name; missing ones take their defaults.
    Required settings must be present."""
    for f, s in settings_of(cls):
        if is_required(cls, f, s) and values.get(f.name) is None:
            if s.positional and s.metavar and "|" in s.metavar:  # one of a few words: show them
                words = s.metavar.split("|")
                raise UserError(f"{f.name.upper()} is missing: {' or '.join(words)} ({s.help})",
                                f"pass one of them, e.g. {words[0]}")
            what = f.name.upper() if s.positional else flag_of(f, s)
            raise UserError(f"{what} is required", f"pass {what}, or set '{key_of(f, s)}' in the --config file")
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in known})


def to_argv(values: dict[str, Any], classes: Iterable[type]) -> list[str]:
    """Flags that give `values` (settings by name) on a command line: values_from_args's inverse."""
    argv: list[str] = []
    for cls in classes:
        for f, s in settings_of(cls):
            if f.name not in values or s.positional:
                continue
            value, flag = values[f.name], flag_of(f, s)
            if s.boolean:
                argv.append(flag if value else "--no-" + flag.removeprefix("--"))
            else:
                argv += [flag, ",".join(value) if s.many else str(value)]
    return argv


def to_json(obj: Any) -> dict[str, Any]:
    """A JSON-ready dict of every setting, in declaration order; nested options are flattened."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.update(to_json(value))
            continue
        if "setting" not in f.metadata:
            continue
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out
