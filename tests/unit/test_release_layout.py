"""Kata's release layout written by osbuilder: the tree, the links, root_hash.txt beside a
verity image, the release tarballs (root owners, reproducible) and SHA256SUMS."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from osbuilder.foundation.errors import UserError
from osbuilder.pack.artifact import Artifact, PackDetails
from osbuilder.release.layout import (ReleaseOptions, arrange_kata_layout, release_artifacts, write_release_tarballs,
                               write_sha256sums)
from osbuilder.foundation.runner import Runner


def artifacts_in(directory: Path) -> list[Artifact]:
    directory.mkdir(parents=True)
    image = directory / "kata-containers.img"
    image.write_bytes(b"image bytes")
    (directory / "root_hash.txt").write_text("root_hash=ab,salt=cd,data_blocks=1,data_block_size=4096,"
                                              "hash_block_size=4096\n")
    initrd = directory / "kata-containers-initrd.img"
    initrd.write_bytes(b"initrd bytes")
    os.chown(image, 1000, 1000)  # the tarball must say root whatever the files say
    return [Artifact(image, "image", 11, PackDetails("agent"), sidecars={"root_hash.txt": "..."}),
            Artifact(initrd, "initrd", 12, PackDetails("agent"))]


@pytest.mark.parametrize("variant", [None, "confidential"])
def test_the_tree_links_and_sidecar(tmp_path: Path, variant: str | None):
    out = tmp_path / "out"
    options = ReleaseOptions(layout="kata", variant=variant)
    placed = arrange_kata_layout(out, artifacts_in(out), options, "debian", "bookworm")
    share = out / "opt/kata/share/kata-containers"
    tail = f"-{variant}" if variant else ""
    assert sorted(os.listdir(share)) == sorted([f"kata-debian-bookworm{tail}.image", f"kata-debian-bookworm{tail}.initrd",
                                                f"kata-containers{tail}.img", f"kata-containers-initrd{tail}.img",
                                                "root_hash.txt"])
    assert os.readlink(share / f"kata-containers{tail}.img") == f"kata-debian-bookworm{tail}.image"
    assert os.readlink(share / f"kata-containers-initrd{tail}.img") == f"kata-debian-bookworm{tail}.initrd"
    assert [p.path for p in placed] == [share / f"kata-debian-bookworm{tail}.image",
                                        share / f"kata-debian-bookworm{tail}.initrd"]
    # inspect finds them through the links, as it finds Kata's own releases.
    assert sorted(p.name for p in release_artifacts(out, tmp_path, Runner())) == sorted(
        [f"kata-containers-initrd{tail}.img", f"kata-containers{tail}.img"])


@pytest.mark.parametrize("compression,suffix,flag", [("zstd", "zst", "--zstd"), ("xz", "xz", "--xz")])
def test_release_tarballs_have_root_owners_and_are_reproducible(tmp_path: Path, compression, suffix, flag):
    digests = []
    for name in ("one", "two"):
        out = tmp_path / name
        options = ReleaseOptions(layout="kata", tarball=True, tarball_compression=compression)
        placed = arrange_kata_layout(out, artifacts_in(out), options, "debian", "bookworm")
        os.utime(placed[0].path, (1800000000 + len(name), 1800000000 + len(name)))  # the clock must not matter
        tarballs = write_release_tarballs(out, placed, options, 1700000000, Runner())
        assert [t.name for t in tarballs] == [f"kata-static-rootfs-image.tar.{suffix}",
                                              f"kata-static-rootfs-initrd.tar.{suffix}"]
        digests.append([hashlib.sha256(t.read_bytes()).hexdigest() for t in tarballs])
        listing = subprocess.run(["tar", flag, "-tvf", str(tarballs[0]), "--numeric-owner"], capture_output=True,
                                 text=True, check=True).stdout.splitlines()
        share = "opt/kata/share/kata-containers"
        assert [line.split()[-1] if "->" not in line else line.split()[-3] for line in listing] == [
            f"{share}/kata-containers.img", f"{share}/kata-debian-bookworm.image", f"{share}/root_hash.txt"]
        assert all(" 0/0 " in line for line in listing), listing
        assert all("2023-11-14" in line for line in listing), listing
    assert digests[0] == digests[1], "two builds gave different tarballs"


def test_sha256sums_lists_every_file(tmp_path: Path):
    out = tmp_path / "out"
    placed = arrange_kata_layout(out, artifacts_in(out), ReleaseOptions(layout="kata"), "debian", "bookworm")
    (out / "manifest.json").write_text("{}")
    sums = write_sha256sums(out).read_text().splitlines()
    assert sums[0].endswith("  manifest.json") and len(sums) == 4
    assert f"{hashlib.sha256(b'image bytes').hexdigest()}  {placed[0].path.relative_to(out)}" in sums
    assert subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=out).returncode == 0


def test_layout_options_are_checked(tmp_path: Path):
    for options, message in ((ReleaseOptions(tarball=True), "apply to --layout kata"),
                             (ReleaseOptions(layout="kata", prefix=Path("opt/kata")), "not an absolute path"),
                             (ReleaseOptions(layout="kata", variant="../x"), "is not a plain name")):
        with pytest.raises(UserError, match=message):
            options.validate()
