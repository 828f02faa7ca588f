"""Outputs appear whole or not at all.

Work happens in a hidden directory beside the output (same filesystem, so the final
rename is atomic). On success the result is renamed into place; on any failure, Ctrl-C
or SIGTERM the staging directory is removed and the output is left as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import uuid
from pathlib import Path
from types import TracebackType
from typing import Iterator

from osbuilder.foundation.errors import UserError
from osbuilder.foundation.fsutil import check_output_path, remove_tree

log = logging.getLogger("osbuilder")


def _check_output_parent(output: Path, flag: str) -> Path:
    """The output is not a system path, and its directory exists and is writable."""
    resolved = check_output_path(output, flag)
    if not resolved.parent.is_dir():
        raise UserError(f"output directory '{resolved.parent}' does not exist", f"create it first, or pass another {flag}")
    if not os.access(resolved.parent, os.W_OK):
        raise UserError(f"cannot write to '{resolved.parent}'", "choose an output you can write to")
    return resolved


def check_output_dir(output: Path, force: bool, flag: str = "-o") -> Path:
    """Validate an output directory before any work starts."""
    resolved = _check_output_parent(output, flag)
    if resolved.exists() and not resolved.is_dir():
        raise UserError(f"output '{output}' exists and is not a directory", "remove it or choose another path")
    if resolved.is_dir() and any(resolved.iterdir()) and not force:
        raise UserError(f"output directory '{output}' is not empty", "pass --force to replace it, or choose another path")
    return resolved


OWNER_LOCK = ".osbuilder-owner"  # in every staging directory, locked by the build using it


def _owner_gone(staging: Path) -> bool:
    """The build that made `staging` holds a lock on its owner file while it runs; a lock
    that can be taken means that build is gone (killed: SIGKILL leaves no time to clean up)."""
    try:
        fd = os.open(staging / OWNER_LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False  # no owner file: made by a build just starting, or not ours
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def remove_stale_staging(output: Path) -> list[Path]:
    """Remove the staging directories beside `output` whose builds are gone."""
    removed = []
    for candidate in sorted(output.parent.glob(f".{glob_escape(output.name)}.osbuilder-*")):
        if candidate.is_dir() and not candidate.is_symlink() and _owner_gone(candidate):
            log.warning("removing %s, left by a build that is gone", candidate)
            remove_tree(candidate)
            removed.append(candidate)
    return removed


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


class Staging:
    """`with Staging(out) as stage:` ... `stage.commit(stage.path / "rootfs")`."""

    def __init__(self, output: Path) -> None:
        self.output = Path(output)
        self.path: Path | None = None
        self.committed = False
        self._owner: int | None = None

    def __enter__(self) -> "Staging":
        remove_stale_staging(self.output)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.output.name}.osbuilder-", dir=self.output.parent))
        # Held until this process ends, however it ends; children do not inherit it.
        self._owner = os.open(self.path / OWNER_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._owner, fcntl.LOCK_EX)
        return self

    @property
    def work(self) -> Path:
        assert self.path is not None
        work = self.path / "work"
        work.mkdir(exist_ok=True)
        return work

    def commit(self, result: Path) -> Path:
        """Move `result` (inside staging) to the output, replacing what was there."""
        assert self.path is not None
        if self.output.exists() or self.output.is_symlink():
            os.replace(self.output, self.path / f"previous-{uuid.uuid4().hex}")
        os.replace(result, self.output)
        self.committed = True
        return self.output

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.path is not None:
            if exc is not None:
                log.info("removing staging %s", self.path)
            remove_tree(self.path)
        if self._owner is not None:
            os.close(self._owner)
            self._owner = None


def check_output_file(output: Path, force: bool, flag: str = "-o") -> Path:
    """Validate a file output before any work starts."""
    resolved = _check_output_parent(output, flag)
    if resolved.is_dir():
        raise UserError(f"output '{output}' is a directory", f"pass a file name to {flag}")
    if resolved.exists() and not force:
        raise UserError(f"output '{output}' already exists", "pass --force to replace it, or choose another path")
    return resolved


class StagedFile:
    """`with StagedFile(out) as tmp:` write tmp; it becomes `out` only if the block succeeds."""

    def __init__(self, output: Path, mode: int = 0o644) -> None:
        self.output = Path(output)
        self.mode = mode
        self.path: Path | None = None

    def __enter__(self) -> Path:
        fd, name = tempfile.mkstemp(prefix=f".{self.output.name}.osbuilder-", dir=self.output.parent)
        os.close(fd)
        self.path = Path(name)
        return self.path

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self.path is not None
        if exc is None:
            os.chmod(self.path, self.mode)
            os.replace(self.path, self.output)
        else:
            self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def work_directory(output: Path) -> Iterator[Path]:
    """A scratch directory beside `output`, removed afterwards whatever happens."""
    path = Path(tempfile.mkdtemp(prefix=f".{Path(output).name}.work-", dir=Path(output).parent))
    try:
        yield path
    finally:
        remove_tree(path)
