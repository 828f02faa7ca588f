"""Benchmark: a cold `osbuilder rootfs` against the package manager alone, on the same package set.

What osbuilder adds on top of the package manager (its tarball hand-off, provisioning,
validation) is the ratio of the two. Each round runs every candidate once, alternating,
with no cache, into a fresh directory; medians are printed with the tree sizes (du -s).

- debian (x86_64; aarch64 with --arches): mmdebstrap alone (directory output) against
  `osbuilder rootfs --distro debian --init agent`, both from a local signed copy of
  Debian's packages for the set (fetched once from Debian's mirror, served on 127.0.0.1), so
  the network's spread between rounds does not drown osbuilder's few seconds.
- centos: `dnf --installroot` alone against `osbuilder rootfs --distro centos`, from the test
  suite's local signed repository (CentOS's mirror is out of reach here).
- alpine: osbuilder's Python apk installer from the test suite's local repository; there is
  no apk on Debian to compare with, so only its time is printed.

Usage: python benchmarks/bootstrap.py [--rounds N] [--workdir DIR] [--arches x86_64,aarch64]
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
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import compile_osbuilder, du_bytes, private_workdir  # noqa: E402

from osbuilder.foundation.arch import get_arch  # noqa: E402
from osbuilder.rootfs.recipes import load_recipe  # noqa: E402
from tests.local_repos import GpgKey, serve_directory  # noqa: E402
from tests.local_repos.apt import build_apt_repo, collect_debs  # noqa: E402
from tests.local_repos.apk import ApkKey, alpine_packages, write_repo  # noqa: E402
from tests.local_repos.rpm import build_rpm_repo, build_rpms  # noqa: E402

AGENT = "/bin/busybox"


def run(argv: list[str], env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(argv)}\n{proc.stderr[-3000:]}")


def osbuilder_rootfs(distro: str, arch: str, *extra: str) -> Callable[[Path], None]:
    # The host's busybox is an x86_64 agent; foreign arches take the probe (a shell script).
    agent = ["--agent", AGENT] if arch == "x86_64" else ["--probe-agent"]
    return lambda out: run([sys.executable, "-m", "osbuilder", "-q", "rootfs", "--distro", distro, "--init", "agent",
                            *agent, "--arch", arch, "--no-cache", "-o", str(out), *extra])


def mmdebstrap_alone(arch: str, mirror: str, keyring: Path) -> Callable[[Path], None]:
    recipe = load_recipe("debian")
    packages = recipe.packages_for(arch, "agent", True)
    return lambda out: run(["mmdebstrap", "--mode=unshare", "--variant=required", f"--arch={get_arch(arch).debian}",
                            "--components=main", f"--keyring={keyring}", f"--include={','.join(packages)}",
                            recipe.default_release, str(out), mirror])


def debian_mirror(arch: str, work: Path, stack: ExitStack) -> tuple[str, Path]:
    """Debian's packages for the recipe's agent-mode set, as a local signed repository."""
    recipe = load_recipe("debian")
    debs = collect_debs(recipe.packages_for(arch, "agent", True), get_arch(arch).debian, REPO / ".cache" / "bench")
    key = GpgKey.create(work / "gnupg", "osbuilder bench archive")
    release = recipe.default_release  # with its -updates and -security suites, empty: pass --security-mirror too
    build_apt_repo(work / "repo", debs, release, "main", get_arch(arch).debian, key,
                   more_suites=(f"{release}-updates", f"{release}-security"))
    keyring = key.export(work / "keyring.gpg")
    os.chmod(work, 0o755)  # mmdebstrap's apt reads the keyring as an unprivileged user
    return stack.enter_context(serve_directory(work / "repo")), keyring


def dnf_alone(mirror: str, keyring: Path, work: Path) -> Callable[[Path], None]:
    """dnf with the same generated configuration osbuilder writes (so only osbuilder's own steps differ)."""
    recipe = load_recipe("centos")
    packages = recipe.packages_for("x86_64", "agent", True)
    conf, repos = work / "dnf.conf", work / "repos.d"
    repos.mkdir(parents=True, exist_ok=True)
    conf.write_text(f"[main]\ngpgcheck=1\ninstall_weak_deps=False\ntsflags=nodocs\nreposdir={repos}\n")
    baseurls = [url.replace("{mirror}", mirror) for url in recipe.backend_section.repositories]
    (repos / "bench.repo").write_text("".join(
        f"[bench-{i}]\nname=bench {i}\nbaseurl={url}\ngpgcheck=1\ngpgkey=file://{keyring}\n\n"
        for i, url in enumerate(baseurls)))
    (work / "home").mkdir(exist_ok=True)
    (work / "home" / ".rpmmacros").write_text("%_dbpath /var/lib/rpm\n")
    return lambda out: run(["dnf", "-y", "-q", f"--installroot={out}", f"--config={conf}",
                            f"--setopt=reposdir={repos}", f"--setopt=cachedir={work / 'cache' / out.name}",
                            "--noplugins", "--releasever=9", "--forcearch=x86_64", "install", *packages],
                           env={"HOME": str(work / "home")})


def rpm_mirror(work: Path, stack: ExitStack) -> tuple[str, Path]:
    key = GpgKey.create(work / "gnupg", "osbuilder bench")
    rpms = sorted(build_rpms(work / "rpms", "x86_64", key).iterdir())
    build_rpm_repo(work / "mirror" / "9-stream/BaseOS/x86_64/os", rpms, key)
    build_rpm_repo(work / "mirror" / "9-stream/AppStream/x86_64/os", [], key)
    return stack.enter_context(serve_directory(work / "mirror")), key.export(work / "key.asc", armor=True)


def apk_mirror(work: Path, stack: ExitStack) -> tuple[str, Path]:
    key = ApkKey.create(work / "apk-keys", "bench")
    write_repo(work / "apk" / "v3.22/main", alpine_packages(Path(AGENT).read_bytes(), "x86_64"), "x86_64", key)
    return stack.enter_context(serve_directory(work / "apk")), key.public


SETTLE_S = 35.0


def measure(candidates: dict[str, Callable[[Path], None]], rounds: int, work: Path,
            settle: float = SETTLE_S) -> dict[str, tuple[float, int]]:
    times: dict[str, list[float]] = {name: [] for name in candidates}
    sizes: dict[str, int] = {}
    for round_number in range(rounds):
        for name, candidate in candidates.items():
            out = work / f"{name.replace(' ', '_')}-{round_number}"
            start = time.monotonic()
            candidate(out)
            times[name].append(time.monotonic() - start)
            sizes[name] = du_bytes(out)
            shutil.rmtree(out)
            os.sync()  # the next run starts with nothing of this one's left to write back
            # ext4 skips inodes freed in the last 30 s (their table block written back), one
            # by one, for every file it creates: without the pause the next run pays for
            # this run's deletion, seconds that belong to neither.
            time.sleep(settle)
    return {name: (statistics.median(times[name]), sizes[name]) for name in candidates}


def report(title: str, results: dict[str, tuple[float, int]], base: str | None) -> None:
    print(f"\n{title}")
    print(f"{'method':<34}{'time s':>9}{'tree MiB':>10}{'time ×':>9}{'size ×':>9}")
    for name, (seconds, size) in results.items():
        ratio = f"{seconds / results[base][0]:>9.3f}{size / results[base][1]:>9.3f}" if base else ""
        print(f"{name:<34}{seconds:>9.2f}{size / 2**20:>10.1f}{ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--arches", default="x86_64", help="Debian arches, comma separated")
    parser.add_argument("--settle", type=float, default=SETTLE_S,
                        help="seconds to wait after deleting a run's tree (default %(default)s)")
    parser.add_argument("--tmpfs", action="store_true",
                        help="the Debian runs write their trees to a tmpfs mounted in the workdir (and "
                             "unmounted after), keeping the disk's inode allocator out of the figure")
    args = parser.parse_args()
    compile_osbuilder()
    work = private_workdir(args.workdir, "osbuilder-bench-bootstrap-")
    os.chmod(work, 0o755)  # mmdebstrap's unprivileged apt reads the keyring below it
    trees = work / "trees" if args.tmpfs else work
    trees.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        if args.tmpfs:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8g", "osbuilder-bench", str(trees)], check=True)
            stack.callback(subprocess.run, ["umount", str(trees)], check=True)
        for arch in args.arches.split(","):
            mirror, keyring = debian_mirror(arch, work / f"debian-{arch}", stack)
            results = measure({f"mmdebstrap alone ({arch})": mmdebstrap_alone(arch, mirror, keyring),
                               f"osbuilder rootfs debian ({arch})": osbuilder_rootfs(
                                   "debian", arch, "--mirror", mirror, "--security-mirror", mirror,
                                   "--keyring", str(keyring))},
                              args.rounds, trees, args.settle)
            report(f"debian bookworm, agent mode, {arch}: local copy of Debian's packages", results,
                   f"mmdebstrap alone ({arch})")
        mirror, keyring = rpm_mirror(work / "rpm", stack)
        results = measure({"dnf alone": dnf_alone(mirror, keyring, work / "dnf"),
                           "osbuilder rootfs centos": osbuilder_rootfs("centos", "x86_64", "--mirror", mirror,
                                                                       "--keyring", str(keyring))},
                          args.rounds, work, settle=0)  # trees of a few MiB
        report("centos stream9, agent mode, x86_64: local signed repository of stand-in RPMs", results, "dnf alone")
        mirror, keyring = apk_mirror(work / "apk", stack)
        results = measure({"osbuilder rootfs alpine": osbuilder_rootfs("alpine", "x86_64", "--mirror", mirror,
                                                                       "--keyring", str(keyring))},
                          args.rounds, work, settle=0)
        report("alpine 3.22, agent mode, x86_64: local signed repository (no apk here to compare with)",
               results, None)


if __name__ == "__main__":
    main()
