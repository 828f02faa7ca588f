"""Shared benchmark plumbing: a Debian bookworm systemd rootfs, timing, peak RSS."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def debian_systemd_rootfs(workdir: Path) -> Path:
    """Build (with a bootstrap cache) the tree the benchmarks run on."""
    tree = workdir / "rootfs-systemd"
    if not tree.exists():
        subprocess.run([sys.executable, "-m", "osbuilder", "-q", "rootfs", "--distro", "debian", "--init", "systemd",
                        "--agent", "/bin/busybox", "--cache-dir", str(REPO / ".cache" / "bench"), "-o", str(tree)],
                       check=True, env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"})
    return tree


def timed(argv: list[str], *, shell: bool = False, cwd: Path | None = None) -> tuple[float, int]:
    """Wall time in seconds and peak RSS in bytes of a command and its waited-for children."""
    start = time.monotonic()
    proc = subprocess.Popen(argv if not shell else argv[0], shell=shell, cwd=cwd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark command failed: {argv}")
    return elapsed, usage.ru_maxrss * 1024


def median(values: list[float]) -> float:
    return statistics.median(values)


def du_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-s", "--block-size=1", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])
