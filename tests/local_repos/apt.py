"""A signed Debian-format repository under an Ubuntu suite name, holding real Debian packages.

The packages are what mmdebstrap downloads for the recipe's package set (both init modes) from
Debian's mirror, kept with their essential set; the index is apt-ftparchive's and the Release
file is clear-signed with a test key. mmdebstrap then installs the Ubuntu recipe from it with
`--keyring` for real: suite, components, keyring handling and all.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from tests.local_repos import GpgKey, run

DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SUITE = "bookworm"


def collect_debs(packages: tuple[str, ...], arch_debian: str, cache: Path) -> Path:
    """Every .deb a required-variant bootstrap of `packages` installs, cached by the set."""
    key = hashlib.sha256(f"{DEBIAN_SUITE} {arch_debian} {sorted(packages)}".encode()).hexdigest()[:16]
    debs = cache / "local-repos" / f"debs-{arch_debian}-{key}"
    if not debs.is_dir():
        partial = debs.with_name(debs.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        run(["mmdebstrap", "--mode=unshare", "--variant=required", "--format=null", f"--arch={arch_debian}",
             "--skip=download/empty", "--skip=essential/unlink", f"--include={','.join(packages)}",
             f"--customize-hook=sync-out /var/cache/apt/archives {partial}", DEBIAN_SUITE, "/dev/null",
             DEBIAN_MIRROR], timeout=1800)
        (partial / "lock").unlink(missing_ok=True)
        shutil.rmtree(partial / "partial", ignore_errors=True)
        partial.rename(debs)
    return debs


def build_apt_repo(root: Path, debs: Path, suite: str, component: str, arch_debian: str, key: GpgKey,
                   more_suites: tuple[str, ...] = ()) -> Path:
    """dists/<suite>/{Release,InRelease} and pool/ under `root`; returns `root`. `more_suites`
    (a release's -updates and -security) start empty, each with a pool of its own that
    publish_suite indexes again once a package is added to it."""
    pool = root / "pool" / component
    pool.mkdir(parents=True)
    for deb in debs.glob("*.deb"):
        (pool / deb.name).hardlink_to(deb)
    publish_suite(root, suite, component, arch_debian, key, f"pool/{component}")
    for other in more_suites:
        (root / "pool" / other).mkdir(parents=True)
        publish_suite(root, other, component, arch_debian, key, f"pool/{other}")
    return root


def publish_suite(root: Path, suite: str, component: str, arch_debian: str, key: GpgKey, pool: str) -> None:
    """(Re)write the suite's Packages index of what `pool` (relative to `root`) holds, its
    Release file, and the clear-signed InRelease."""
    binary = root / "dists" / suite / component / f"binary-{arch_debian}"
    binary.mkdir(parents=True, exist_ok=True)
    packages = run(["apt-ftparchive", "packages", pool], cwd=root).stdout
    (binary / "Packages").write_text(packages)
    (root / "dists" / suite / "Release").unlink(missing_ok=True)  # else apt-ftparchive lists it in itself
    release = run(["apt-ftparchive", "-o", f"APT::FTPArchive::Release::Suite={suite}",
                   "-o", f"APT::FTPArchive::Release::Codename={suite}",
                   "-o", f"APT::FTPArchive::Release::Components={component}",
                   "-o", f"APT::FTPArchive::Release::Architectures={arch_debian}",
                   "release", f"dists/{suite}"], cwd=root).stdout
    (root / "dists" / suite / "Release").write_text(release)
    (root / "dists" / suite / "InRelease").unlink(missing_ok=True)
    key.gpg("--clearsign", "--output", root / "dists" / suite / "InRelease", root / "dists" / suite / "Release")


def newer_deb(deb: Path, suffix: str, into: Path) -> Path:
    """`deb` rebuilt with `suffix` appended to its version (a security fix's version, as
    Debian's +debNuM are): the same files, a version that sorts after the original's."""
    unpacked = into / f"{deb.stem}.unpacked"
    run(["dpkg-deb", "--raw-extract", deb, unpacked])
    control = unpacked / "DEBIAN" / "control"
    text = control.read_text()
    version = next(line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("Version: "))
    control.write_text(text.replace(f"Version: {version}\n", f"Version: {version}{suffix}\n"))
    name = next(line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("Package: "))
    arch = next(line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("Architecture: "))
    built = into / f"{name}_{version.split(':')[-1]}{suffix}_{arch}.deb"
    run(["dpkg-deb", "--root-owner-group", "--build", unpacked, built])
    shutil.rmtree(unpacked)
    return built
