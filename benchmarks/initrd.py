"""Benchmark: osbuilder's initrd packing against upstream's `find . | cpio -H newc -o | gzip -9`.

Both run in the same process on the same Debian bookworm systemd rootfs, alternating, and
the ratios are printed. Usage: python benchmarks/initrd.py [--rounds N] [--workdir DIR]
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_rounds, setup, timed  # noqa: E402


def main() -> None:
    args, workdir, tree = setup(__doc__)

    candidates = {
        "upstream gzip -9": lambda out: timed([f"find . | cpio --quiet -H newc -o | gzip -9 > {shlex.quote(str(out))}"],
                                              shell=True, cwd=tree)[1],
    }
    for compression in ("gzip", "zstd"):
        candidates[f"osbuilder {compression}"] = (
            lambda out, c=compression: timed([sys.executable, "-m", "osbuilder", "-q", "initrd", str(tree),
                                              "--compression", c, "--force", "-o", str(out)])[1])
    rounds = run_rounds(candidates, args.rounds, workdir)

    base = "upstream gzip -9"
    print(f"{'method':<20}{'time s':>9}{'size MiB':>10}{'peak RSS MB':>13}{'time ×':>9}{'size ×':>9}")
    for name in candidates:
        t, size = rounds.median_time(name), rounds.sizes[name]
        print(f"{name:<20}{t:>9.2f}{size / 2**20:>10.1f}{rounds.peak_rss[name] / 1e6:>13.0f}"
              f"{t / rounds.median_time(base):>9.3f}{size / rounds.sizes[base]:>9.3f}")


if __name__ == "__main__":
    main()
