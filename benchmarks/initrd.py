"""Benchmark: osbuilder's initrd packing against upstream's `find . | cpio -H newc -o | gzip -9`.

Both run in the same process on the same Debian bookworm systemd rootfs, alternating, and
the ratios are printed. Usage: python benchmarks/initrd.py [--rounds N] [--workdir DIR]
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, setup, timed  # noqa: E402


def main() -> None:
    args, workdir, tree = setup(__doc__)

    candidates = {
        "upstream gzip -9": lambda out: timed([f"find . | cpio --quiet -H newc -o | gzip -9 > {shlex.quote(str(out))}"],
                                              shell=True, cwd=tree),
    }
    for compression in ("gzip", "zstd"):
        candidates[f"osbuilder {compression}"] = (
            lambda out, c=compression: timed([sys.executable, "-m", "osbuilder", "-q", "initrd", str(tree),
                                              "--compression", c, "--force", "-o", str(out)]))
    times: dict[str, list[float]] = {name: [] for name in candidates}
    sizes: dict[str, int] = {}
    rss: dict[str, int] = {}
    for _ in range(args.rounds):
        for name, run in candidates.items():
            out = workdir / (name.replace(" ", "_") + ".img")
            elapsed, peak = run(out)
            times[name].append(elapsed)
            sizes[name] = out.stat().st_size
            rss[name] = max(rss.get(name, 0), peak)

    base = "upstream gzip -9"
    print(f"{'method':<20}{'time s':>9}{'size MiB':>10}{'peak RSS MB':>13}{'time ×':>9}{'size ×':>9}")
    for name in candidates:
        t = median(times[name])
        print(f"{name:<20}{t:>9.2f}{sizes[name] / 2**20:>10.1f}{rss[name] / 1e6:>13.0f}"
              f"{t / median(times[base]):>9.3f}{sizes[name] / sizes[base]:>9.3f}")


if __name__ == "__main__":
    main()
