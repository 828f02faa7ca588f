"""Reading documents osbuilder did not write (host configs, a guest's osbuilder.yaml) with
limits: only regular files are opened (a FIFO would block, /dev/zero never ends), no more
than a limit is read, YAML is refused past a depth and an alias expansion (yaml_documents.py),
and values are
checked against the shape their readers expect. Each refusal is a UserError naming the
file, the key and what was expected.
"""

from __future__ import annotations

import contextlib
import gzip
import lzma
import os
import stat
import tarfile
import zlib
from pathlib import Path
from typing import Any, Iterator, Mapping

from osbuilder.foundation.errors import CommandError, UserError

QUOTE_LIMIT = 60  # characters of a value an error message repeats


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, noun in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return noun
    return "not a regular file"


def not_regular(path: Path) -> str | None:
    """None for a regular file (through links), else what it is; FileNotFoundError when absent."""
    mode = os.stat(path).st_mode
    return None if stat.S_ISREG(mode) else kind_of(mode)


def require_file(path: Path | str, what: str, fix: str) -> Path:
    """`path` when it is a regular file (through links); else a UserError saying whether it
    is missing or what it is instead (a FIFO, a device, a directory)."""
    try:
        found = not_regular(Path(path))
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(f"{what} '{path}' does not exist", fix) from None
    if found is not None:
        raise UserError(f"{what} '{path}' is {found}, not a file", fix)
    return Path(path)


def read_regular(path: Path, what: str, limit: int) -> bytes:
    """A regular file's bytes, at most `limit` of them. The file is opened without blocking
    and checked before a byte is read, so a FIFO or a device is refused, not waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UserError(f"{what} '{path}' does not exist", f"pass the path of the {what}") from None
    except OSError as exc:
        raise UserError(f"{what} '{path}' cannot be read ({exc.strerror})", "check the file") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UserError(f"{what} '{path}' is {kind_of(mode)}, not a file", f"pass the {what} file itself")
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            raise UserError(f"{what} '{path}' cannot be read ({exc.strerror})", "check the file") from None
    if len(data) > limit:
        raise UserError(f"{what} '{path}' is larger than {limit >> 20} MiB, the reader's limit",
                        f"pass the {what} itself; a real one is far smaller")
    return data


def quoted(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """A value as an error message repeats it: its repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def type_name(value: Any) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "empty"}.get(type(value), f"a {type(value).__name__}")


Shape = Any  # a type, a tuple of types, a mapping of key -> Shape, or [Shape] for a list of them


def check_shape(value: Any, shape: Shape, source: str, fix: str, where: str = "") -> None:
    """Refuse a value not of the expected shape, naming its key. Keys the shape does not
    name are left alone."""
    if isinstance(shape, Mapping):
        if not isinstance(value, dict):
            raise UserError(f"{source}: {where or 'the document'} is {type_name(value)}, not a mapping", fix)
        for key, inner in shape.items():
            if key in value and value[key] is not None:
                check_shape(value[key], inner, source, fix, f"{where}.{key}" if where else key)
        return
    if isinstance(shape, list):
        if not isinstance(value, list):
            raise UserError(f"{source}: {where} is {type_name(value)}, not a list", fix)
        for index, item in enumerate(value):
            check_shape(item, shape[0], source, fix, f"{where}[{index}]")
        return
    types = shape if isinstance(shape, tuple) else (shape,)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        expected = " or ".join(type_name(t()) for t in types)
        raise UserError(f"{source}: {where} is {type_name(value)} ({quoted(value)}), not {expected}", fix)


# What Python's tarfile and decompressors raise on a cut or damaged archive.
DAMAGED_ARCHIVE = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)


@contextlib.contextmanager
def reading_input(fix: str) -> Iterator[None]:
    """A tool that fails on what it was given to read (a decompressor on a cut stream, fsck
    on a damaged image) means bad input, exit 2, as a UserError carrying the command's hint
    and its last word. A full disk or a timeout stays what it is."""
    try:
        yield
    except CommandError as exc:
        if exc.out_of_space or exc.returncode is None:
            raise
        said = exc.stderr_tail.strip().splitlines()[-1:] if exc.stderr_tail.strip() else []
        because = f"{exc.argv[0]}: {quoted(said[0], 120).strip(chr(39))}" if said else \
            f"{exc.argv[0]} exited with code {exc.returncode}"
        raise UserError(f"{exc.hint or 'the input cannot be read'} ({because})", fix) from None
