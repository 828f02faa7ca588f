"""Trees to and from tarballs with their true owners, modes and xattrs (numeric ids, so
the build host's user database never renames the guest's owners)."""

from __future__ import annotations

from pathlib import Path

from osbuilder.foundation.runner import FILESYSTEM, Runner

_XATTRS = ["--xattrs", "--xattrs-include=*"]


def extract_tarball(tarball: Path, root: Path, runner: Runner, exclude: tuple[str, ...] = ()) -> None:
    root.mkdir(parents=True, exist_ok=True)
    runner.run(["tar", "--extract", "--file", str(tarball), "--directory", str(root),
                "--numeric-owner", "--same-owner", "--preserve-permissions", *_XATTRS,
                *(f"--exclude={pattern}" for pattern in exclude)], limit=FILESYSTEM)


def create_tarball(root: Path, tarball: Path, runner: Runner) -> None:
    runner.run(["tar", "--create", "--file", str(tarball), "--directory", str(root), "--numeric-owner",
                "--sort=name", *_XATTRS, "."], limit=FILESYSTEM)
