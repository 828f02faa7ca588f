"""Shared benchmark plumbing: a Debian bookworm systemd rootfs, timing, peak RSS."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
import os
import re
import statistics
import tempfile
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def compile_osbuilder() -> None:
    """Byte-compile osbuilder, as pip does when it installs the wheel (and the container
    image does). This checkout is an editable install, and with PYTHONDONTWRITEBYTECODE set
    (as on the test machines) every run would otherwise compile all of osbuilder's modules
    again: about 65 ms of start-up that no installed osbuilder pays."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "osbuilder")], check=True,
                   stdout=subprocess.DEVNULL)


def debian_systemd_rootfs(workdir: Path) -> Path:
    """Build (with a bootstrap cache) the tree the benchmarks run on."""
    tree = workdir / "rootfs-systemd"
    if not tree.exists():
        subprocess.run([sys.executable, "-m", "osbuilder", "-q", "rootfs", "--distro", "debian", "--init", "systemd",
                        "--agent", "/bin/busybox", "--cache-dir", str(REPO / ".cache" / "bench"), "-o", str(tree)],
                       check=True, env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"})
    return tree


# The runner's -v record of each command: "osbuilder: NAME: SECONDS s, exit CODE".
COMMAND_TIME = re.compile(r"^osbuilder: (\S+): (\d+\.\d+) s, exit ", re.M)
# A step's end: "osbuilder: STEP: done in SECONDS s".
STEP_TIME = re.compile(r"^osbuilder: (.+?): done in (\d+\.\d+) s$", re.M)


def command_seconds(stderr: str) -> dict[str, float]:
    """Seconds spent in each external command (by name, summed) in a -v run's stderr."""
    found: dict[str, float] = {}
    for name, seconds in COMMAND_TIME.findall(stderr):
        found[name] = found.get(name, 0.0) + float(seconds)
    return found


def step_seconds(stderr: str) -> dict[str, float]:
    """Seconds of each step osbuilder reported, by its words, in order."""
    return {words: float(seconds) for words, seconds in STEP_TIME.findall(stderr)}


def _run_build(flag: str, args: tuple[str, ...]) -> tuple[float, str]:
    """Seconds an `osbuilder FLAG build` takes (SOURCE_DATE_EPOCH set, as a release pipeline
    sets it), and its stderr; a failure ends the benchmark with the build's error output."""
    seconds, stderr, _ = _run_build_lines(flag, args)
    return seconds, stderr


def _run_build_lines(flag: str, args: tuple[str, ...]) -> tuple[float, str, list[tuple[float, str]]]:
    """_run_build, with each stderr line and the second it arrived (from the start)."""
    argv = [sys.executable, "-m", "osbuilder", flag, "build", *args]
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"})
    assert proc.stderr is not None
    lines = [(time.monotonic() - start, line.rstrip("\n")) for line in proc.stderr]
    returncode = proc.wait()
    seconds = time.monotonic() - start
    stderr = "".join(line + "\n" for _, line in lines)
    if returncode != 0:
        raise SystemExit(f"benchmark build failed: {' '.join(argv)}\n{stderr[-3000:]}")
    return seconds, stderr, lines


def timed_build(*args: str) -> float:
    """Seconds a quiet `osbuilder build` takes."""
    return _run_build("-q", args)[0]


def stepped_build(*args: str) -> tuple[float, str, float]:
    """An `osbuilder -v build`: its seconds, its stderr (for command_seconds, step_seconds),
    and the seconds it spent outside every step (outside_steps)."""
    seconds, stderr, lines = _run_build_lines("-v", args)
    return seconds, stderr, outside_steps(seconds, lines)


def outside_steps(total: float, lines: list[tuple[float, str]]) -> float:
    """What the steps leave of `total`. A build runs some steps side by side (its packers, and
    its checks meanwhile), so their seconds overlap and their sum says nothing of the rest:
    each step spans from its "done" line's arrival back by its own seconds, and the union of
    the spans is taken."""
    spans = sorted((arrived - float(match.group(2)), arrived) for arrived, line in lines
                   if (match := STEP_TIME.match(line)))
    covered, reached = 0.0, 0.0
    for begin, end in spans:
        begin = max(begin, reached)
        if end > begin:
            covered += end - begin
            reached = end
    return total - covered


def timed(argv: list[str], *, shell: bool = False, cwd: Path | None = None) -> tuple[float, int]:
    """Wall time in seconds and peak RSS in bytes of a command and its waited-for children."""
    start = time.monotonic()
    proc = subprocess.Popen(argv if not shell else argv[0], shell=shell, cwd=cwd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark command failed: {argv}")
    return elapsed, usage.ru_maxrss * 1024


@dataclass
class Rounds:
    """Per candidate: wall times of every round, the output's size and the disk space it
    takes (holes excluded), the peak RSS seen."""
    times: dict[str, list[float]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    allocated: dict[str, int] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)

    def median_time(self, name: str) -> float:
        return statistics.median(self.times[name])


def run_rounds(candidates: dict[str, Callable[[Path], int | None]], rounds: int, workdir: Path) -> Rounds:
    """Run every candidate once per round, alternating, each writing its own output file.
    A candidate returns its peak RSS in bytes when it measured one (see timed())."""
    result = Rounds()
    for _ in range(rounds):
        for name, run in candidates.items():
            out = workdir / (name.replace(" ", "_").replace("+", "_") + ".img")
            start = time.monotonic()
            peak = run(out)
            result.times.setdefault(name, []).append(time.monotonic() - start)
            result.sizes[name] = out.stat().st_size
            result.allocated[name] = out.stat().st_blocks * 512
            result.peak_rss[name] = max(result.peak_rss.get(name, 0), peak or 0)
    return result


def du_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-s", "--block-size=1", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def setup(description: str | None) -> tuple[argparse.Namespace, Path, Path]:
    """Common flags (--rounds, --workdir), the work directory and the benchmark tree."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = private_workdir(args.workdir, "osbuilder-bench-")
    compile_osbuilder()
    tree = debian_systemd_rootfs(workdir)
    print(f"tree: {tree} ({du_bytes(tree) / 2**20:.0f} MiB on disk, du -s)")
    return args, workdir, tree


def private_workdir(given: Path | None, prefix: str) -> Path:
    """A directory of this run's own, inside --workdir when one is given (never the given
    directory itself, which a benchmark removes at its end: --workdir /var/tmp must leave
    /var/tmp as it was)."""
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=given))
