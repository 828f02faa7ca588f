"""Helpers for hostile-input tests: crafted newc archives, and the real command line run
under a deadline, a memory cap and a cap on the bytes it may write to any one file."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20


@dataclass(frozen=True)
class Limited:
    returncode: int
    stdout: str
    stderr: str


def newc_header(name: bytes, size: int, mode: int = 0o100644, *, filesize: bytes | None = None,
                namesize: bytes | None = None) -> bytes:
    """One "070701" header and its padded name; `filesize`/`namesize` replace a field's
    eight characters as given (to forge one)."""
    fields = [0, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name) + 1, 0]
    text = [b"%08X" % v for v in fields]
    if filesize is not None:
        text[6] = filesize
    if namesize is not None:
        text[11] = namesize
    header = b"070701" + b"".join(text) + name + b"\0"
    return header + b"\0" * (-len(header) % 4)


def newc_member(name: bytes, data: bytes, mode: int = 0o100644) -> bytes:
    return newc_header(name, len(data), mode) + data + b"\0" * (-len(data) % 4)


def newc_trailer() -> bytes:
    return newc_header(b"TRAILER!!!", 0, 0)


def run_limited(*args: str | os.PathLike[str], timeout: float = 60, memory: int = 1024 * MiB,
                file_size: int = 256 * MiB, env: dict[str, str] | None = None) -> Limited:
    """osbuilder as a user runs it, killed past `timeout` (a hang fails the test, it does not
    stall it), with its address space and every file it writes capped."""
    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))

    full_env = {**os.environ, **(env or {})}
    full_env.pop("SOURCE_DATE_EPOCH", None)
    try:
        proc = subprocess.run([sys.executable, "-m", "osbuilder", *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, preexec_fn=limits, env=full_env)
    except subprocess.TimeoutExpired as expired:
        raise AssertionError(f"osbuilder {' '.join(map(str, args))} still ran after {timeout} s") from expired
    return Limited(proc.returncode, proc.stdout, proc.stderr)


def assert_clean_refusal(result: Limited, *words: str) -> None:
    """Exit 2, one line on stderr, no traceback, naming what it must."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1, result.stderr[-2000:]
    for word in words:
        assert word in result.stderr, result.stderr


def small_guest(base: Path, env: dict[str, str] | None = None) -> Path:
    """A provisioned agent-mode tree under `base` (fake packages, busybox as the shell, the
    probe agent), made by osbuilder rootfs --existing (in `env`): small enough to pack in seconds."""
    from tests.helpers import fake_bootstrap

    tree = base / "tree"
    fake_bootstrap(tree, with_systemd=False)
    shutil.copy("/bin/busybox", tree / "usr/bin/sh")
    rootfs = base / "rootfs"
    made = run_limited("rootfs", "--existing", tree, "--distro", "debian", "--init", "agent", "--probe-agent",
                       "-o", rootfs, env=env)
    assert made.returncode == 0, made.stderr
    return rootfs
