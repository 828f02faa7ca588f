"""Benchmark: Kata's whole guest release in one command, against its variants built one by one.

The release matrix (examples/kata-release.toml) as the test suite runs it here: Debian
bookworm from Debian's mirror in place of Ubuntu resolute, and the test suite's local signed
repository in place of Mariner's (their mirrors are out of reach), with Kata-shaped inputs
(the agent tarball with its extension-mount files, the pause bundle, CoCo components; a
static busybox stands in for the agent). The s390x job is left out (it builds on an s390x
machine in Kata's pipeline).

- alone: each variant built by itself, `osbuilder build --config FILE --target NAME`, each
  with an empty cache of its own (what five separate jobs without a shared cache cost);
- the set: `osbuilder build --config FILE --jobs 2` with one empty cache, where the variants
  that share a bootstrap share it (and the downloads).

The ratio is the set's wall time over the sum of the variants' times alone. Target: 0.4.

Usage: python benchmarks/release_set.py [--rounds N] [--workdir DIR] [--jobs N]   # as root
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import compile_osbuilder, timed_build, private_workdir  # noqa: E402

from tests.integration.test_kata_release import EXPECTED, for_this_machine, kata_tarball, write_matrix  # noqa: E402
from tests.local_repos.rpm import served_rpm_mirror  # noqa: E402
from tests.unit.test_agent_sources import EXTENSION_FILES, KATA_TARGET, KATA_UNIT  # noqa: E402

AGENT = Path("/bin/busybox")


def inputs(work: Path) -> dict[str, Path]:
    agent = AGENT.read_bytes()
    work.mkdir(parents=True, exist_ok=True)
    return {
        "agent": kata_tarball(work / "kata-static-agent.tar.zst", {
            "./usr/bin/kata-agent": (agent, 0o755), "./usr/lib/systemd/system/kata-agent.service": (KATA_UNIT, 0o644),
            "./usr/lib/systemd/system/kata-containers.target": (KATA_TARGET, 0o644), **EXTENSION_FILES}),
        "pause": kata_tarball(work / "kata-static-pause-image.tar.zst", {
            "./pause_bundle/config.json": (b"{}\n", 0o644), "./pause_bundle/rootfs/pause": (agent, 0o755)}),
        "coco": kata_tarball(work / "kata-static-coco-guest-components.tar.zst", {
            "./usr/local/bin/attestation-agent": (agent, 0o755)}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    compile_osbuilder()
    work = private_workdir(args.workdir, "osbuilder-bench-release-")
    alone: dict[str, list[float]] = {name: [] for name in EXPECTED}
    together: list[float] = []
    with served_rpm_mirror(work / "rpm", ("cbl-mariner",)) as (mirror, keyring, _):
        matrix = write_matrix(work / "kata-release.toml", for_this_machine(inputs(work / "inputs"), mirror, keyring))
        for round_number in range(args.rounds):
            for name in EXPECTED:
                cache = work / f"cache-{name}"
                alone[name].append(timed_build("--config", str(matrix), "--target", name, "-o", str(work / "alone"),
                                             "--cache-dir", str(cache)))
                shutil.rmtree(cache)
                shutil.rmtree(work / "alone" / name)
                print(f"round {round_number + 1}: {name} alone {alone[name][-1]:.1f} s", flush=True)
            cache = work / "cache-set"
            together.append(timed_build("--config", str(matrix), "-o", str(work / "set"), "--jobs", str(args.jobs),
                                      "--cache-dir", str(cache)))
            shutil.rmtree(cache)
            shutil.rmtree(work / "set")
            print(f"round {round_number + 1}: the set, --jobs {args.jobs}: {together[-1]:.1f} s", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    print(f"\nKata's release set ({len(EXPECTED)} variants, x86_64), empty caches, medians of {args.rounds} round(s)")
    for name, times in alone.items():
        print(f"  {name:<28}{statistics.median(times):>8.1f} s alone")
    total = sum(statistics.median(times) for times in alone.values())
    setting = statistics.median(together)
    print(f"  {'sum of the variants alone':<28}{total:>8.1f} s")
    print(f"  {f'the set, --jobs {args.jobs}':<28}{setting:>8.1f} s")
    print(f"  ratio set / sum alone: {setting / total:.3f} (target 0.4)")


if __name__ == "__main__":
    main()
