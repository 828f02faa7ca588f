"""Benchmark: a rebuild that changes only the agent, against the cold build, side by side.

Each round: a cold `osbuilder build --format initrd,image` of Debian bookworm (agent mode)
into an empty cache directory, then the same build with another agent and the same cache
directory (the base tree comes from the cache). The ratio is the rebuild's time over the
cold build's. Two sources, each measured this way: Debian's mirror (what a pipeline's cold
build fetches from) and a local signed copy of its packages served on 127.0.0.1, as in
bootstrap.py (no network time: the cold build at its fastest, so the harder ratio).

Target: the rebuild takes at most 15% of the cold build's time.

Usage: python benchmarks/rebuild.py [--rounds N] [--workdir DIR]   # as root
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bootstrap import debian_mirror  # noqa: E402

AGENTS = (("--agent", "/bin/busybox"), ("--probe-agent",))
DEBIAN_MIRROR = "http://deb.debian.org/debian"


def build(out: Path, cache: Path, mirror: str, keyring: Path | None, agent: tuple[str, ...]) -> float:
    argv = [sys.executable, "-m", "osbuilder", "-q", "build", "--distro", "debian", "--init", "agent", *agent,
            "--mirror", mirror, *(["--keyring", str(keyring)] if keyring else []), "--cache-dir", str(cache),
            "--format", "initrd,image", "-o", str(out)]
    start = time.monotonic()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"})
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"benchmark build failed: {' '.join(argv)}\n{proc.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="osbuilder-bench-rebuild-"))
    work.mkdir(parents=True, exist_ok=True)
    times: dict[str, tuple[list[float], list[float]]] = {"Debian's mirror": ([], []), "local copy": ([], [])}
    with ExitStack() as stack:
        local, keyring = debian_mirror("x86_64", work / "debian", stack)
        sources = {"Debian's mirror": (DEBIAN_MIRROR, None), "local copy": (local, keyring)}
        for round_number in range(args.rounds):
            for source, (mirror, key) in sources.items():
                cache = work / f"cache-{round_number}"
                outs = [work / f"cold-{round_number}", work / f"rebuild-{round_number}"]
                cold, warm = times[source]
                cold.append(build(outs[0], cache, mirror, key, AGENTS[0]))
                os.sync()
                warm.append(build(outs[1], cache, mirror, key, AGENTS[1]))
                for path in (*outs, cache):
                    shutil.rmtree(path)
                os.sync()
                print(f"round {round_number + 1}, {source}: cold {cold[-1]:.2f} s, rebuild {warm[-1]:.2f} s",
                      flush=True)
    shutil.rmtree(work, ignore_errors=True)
    print("\ndebian bookworm, agent mode, x86_64, --format initrd,image")
    print(f"{'source':<18}{'cold s':>9}{'rebuild s':>11}{'rebuild ÷ cold':>16}")
    for source, (cold, warm) in times.items():
        cold_s, warm_s = statistics.median(cold), statistics.median(warm)
        print(f"{source:<18}{cold_s:>9.2f}{warm_s:>11.2f}{warm_s / cold_s:>16.3f}")


if __name__ == "__main__":
    main()
