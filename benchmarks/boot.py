"""Benchmark: booting the agent-mode initrd through PVH (the vmlinux osbuilder extracts)
against booting the same Debian bzImage as is, under TCG, in the same run.

Both go through `osbuilder boot` with the same initrd, kernel package and options; only
`--no-pvh` differs. The figure is the time from starting qemu to the probe's line (the
harness's `boot_seconds`), median of N alternating rounds.

Usage: python benchmarks/boot.py [--rounds N] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "bench"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import private_workdir  # noqa: E402


def osbuilder(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "osbuilder", *args], check=True, capture_output=True, text=True,
                          env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = private_workdir(args.workdir, "osbuilder-bench-boot-")
    out = workdir / "agent-probe"
    if not (out / "kata-containers-initrd.img").exists():
        osbuilder("-q", "build", "--distro", "debian", "--init", "agent", "--probe-agent", "--format", "initrd",
                  "--cache-dir", str(CACHE), "--force", "-o", str(out))
    initrd = out / "kata-containers-initrd.img"
    print(f"initrd: {initrd} ({initrd.stat().st_size / 2**20:.1f} MiB)")

    candidates = {"bzImage (vmlinuz as is)": ("--no-pvh",), "PVH vmlinux (osbuilder)": ()}
    times: dict[str, list[float]] = {name: [] for name in candidates}
    kernel = ""
    for _ in range(args.rounds):
        for name, extra in candidates.items():
            report = json.loads(osbuilder("boot", str(initrd), "--kernel", "debian", "--cache-dir", str(CACHE),
                                          "--accel", "tcg", "--json", *extra))
            assert report["ok"], report
            times[name].append(report["boot_seconds"])
            kernel = kernel or report["kernel"]
    base = "bzImage (vmlinuz as is)"
    print(f"{'kernel':<26}{'median s':>10}{'rounds':>30}{'× bzImage':>11}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<26}{median:>10.2f}{' '.join(f'{s:.2f}' for s in samples):>30}"
              f"{median / statistics.median(times[base]):>11.3f}")


if __name__ == "__main__":
    main()
