"""Benchmark: a rebuild that changes only the agent, against the cold build, side by side.

Each round: a cold `osbuilder build --format initrd,image` of Debian bookworm (agent mode)
into an empty cache directory, then the same build with another agent and the same cache
directory (the base tree comes from the cache). The ratio is the rebuild's time over the
cold build's. Two sources, each measured this way: Debian's mirror (what a pipeline's cold
build fetches from) and a local signed copy of its packages served on 127.0.0.1, as in
bootstrap.py (no network time: the cold build at its fastest, so the harder ratio).

Each round also times the rebuild twice: right after the cold build ("back to back"), and
after a pause ("settled"). On a filesystem without a journal, as on the test machines,
ext4 skips every inode freed in the last 30 s one by one when it creates a file, so a
build right after another pays for the first one's deletions; the pause (and a journaled
ext4, XFS or tmpfs) avoids that.

Target: the rebuild takes at most 15% of the cold build's time.

Usage: python benchmarks/rebuild.py [--rounds N] [--workdir DIR]   # as root
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (command_seconds, compile_osbuilder, private_workdir, step_seconds, stepped_build,  # noqa: E402
                     timed_build)
from bootstrap import debian_mirror  # noqa: E402

AGENTS = (("--agent", "/bin/busybox"), ("--probe-agent",))
DEBIAN_MIRROR = "http://deb.debian.org/debian"


def build_args(out: Path, cache: Path, mirror: str, keyring: Path | None, agent: tuple[str, ...]) -> tuple[str, ...]:
    return ("--distro", "debian", "--init", "agent", *agent, "--mirror", mirror,
            *(["--keyring", str(keyring), "--security-mirror", mirror] if keyring else []), "--cache-dir", str(cache),
            "--format", "initrd,image", "-o", str(out))


def build(out: Path, cache: Path, mirror: str, keyring: Path | None, agent: tuple[str, ...]) -> float:
    return timed_build("--distro", "debian", "--init", "agent", *agent, "--mirror", mirror,
                       *(["--keyring", str(keyring), "--security-mirror", mirror] if keyring else []), "--cache-dir", str(cache),
                       "--format", "initrd,image", "-o", str(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--settle", type=float, default=35.0,
                        help="seconds to wait before the settled rebuild (default %(default)s)")
    args = parser.parse_args()
    compile_osbuilder()
    work = private_workdir(args.workdir, "osbuilder-bench-rebuild-")
    times: dict[str, dict[str, list[float]]] = {source: {"cold": [], "back to back": [], "settled": []}
                                                for source in ("Debian's mirror", "local copy")}
    where: dict[str, tuple[float, dict[str, float], dict[str, float], float]] = {}  # the last settled rebuild's
    with ExitStack() as stack:
        local, keyring = debian_mirror("x86_64", work / "debian", stack)
        sources = {"Debian's mirror": (DEBIAN_MIRROR, None), "local copy": (local, keyring)}
        for round_number in range(args.rounds):
            for source, (mirror, key) in sources.items():
                cache = work / f"cache-{round_number}"
                outs = [work / f"{kind}-{round_number}" for kind in ("cold", "rebuild", "settled")]
                measured = times[source]
                time.sleep(args.settle)
                measured["cold"].append(build(outs[0], cache, mirror, key, AGENTS[0]))
                os.sync()
                measured["back to back"].append(build(outs[1], cache, mirror, key, AGENTS[1]))
                os.sync()
                time.sleep(args.settle)
                seconds, log, outside = stepped_build(*build_args(outs[2], cache, mirror, key, AGENTS[1]))
                measured["settled"].append(seconds)
                where[source] = (seconds, step_seconds(log), command_seconds(log), outside)
                for path in (*outs, cache):
                    shutil.rmtree(path)
                os.sync()
                print(f"round {round_number + 1}, {source}: " +
                      ", ".join(f"{kind} {values[-1]:.2f} s" for kind, values in measured.items()), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    print("\ndebian bookworm, agent mode, x86_64, --format initrd,image (medians)")
    print(f"{'source':<18}{'cold s':>9}{'rebuild s':>11}{'÷ cold':>8}{'settled s':>11}{'÷ cold':>8}")
    for source, measured in times.items():
        cold, now, settled = (statistics.median(measured[k]) for k in ("cold", "back to back", "settled"))
        print(f"{source:<18}{cold:>9.2f}{now:>11.2f}{now / cold:>8.3f}{settled:>11.2f}{settled / cold:>8.3f}")
    for source, (total, steps, commands, outside) in where.items():
        print(f"\nwhere the last settled rebuild's {total:.2f} s went ({source}; osbuilder -v, so a little slower;"
              " validating and packing run side by side):")
        for words, seconds in steps.items():
            print(f"  step {words:<60}{seconds:>7.2f} s")
        print(f"  outside every step (start-up, options, indexes, digests, manifest, clean-up){outside:>8.2f} s")
        top = sorted(commands.items(), key=lambda item: -item[1])[:8]
        print("  commands: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in top))


if __name__ == "__main__":
    main()
