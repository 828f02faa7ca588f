"""Kata's release layout written by osbuilder: the tree, the links, root_hash_<label>.txt beside
a verity image, the release tarballs (Kata's member names, host-safe, root owners,
reproducible, mergeable) and SHA256SUMS."""

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


PARAMS = "root_hash=ab,salt=cd,data_blocks=1,data_block_size=4096,hash_block_size=4096\n"


def artifacts_in(directory: Path, label: str = "base") -> list[Artifact]:
    directory.mkdir(parents=True)
    image = directory / "kata-containers.img"
    image.write_bytes(b"image bytes")
    (directory / f"root_hash_{label}.txt").write_text(PARAMS)
    initrd = directory / "kata-containers-initrd.img"
    initrd.write_bytes(b"initrd bytes")
    os.chown(image, 1000, 1000)  # the tarball must say root whatever the files say
    os.chmod(image, 0o600)  # and 0644 whatever the mode
    return [Artifact(image, "image", 11, PackDetails("agent"), sidecars={f"root_hash_{label}.txt": "..."}),
            Artifact(initrd, "initrd", 12, PackDetails("agent"))]


@pytest.mark.parametrize("variant", [None, "confidential"])
def test_the_tree_links_and_sidecar(tmp_path: Path, variant: str | None):
    out = tmp_path / "out"
    options = ReleaseOptions(layout="kata", variant=variant)
    placed = arrange_kata_layout(out, artifacts_in(out, variant or "base"), options, "debian", "bookworm")
    share = out / "opt/kata/share/kata-containers"
    tail = f"-{variant}" if variant else ""
    assert sorted(os.listdir(share)) == sorted([f"kata-debian-bookworm{tail}.image", f"kata-debian-bookworm{tail}.initrd",
                                                f"kata-containers{tail}.img", f"kata-containers-initrd{tail}.img",
                                                f"root_hash_{variant or 'base'}.txt"])
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
        share = "./opt/kata/share/kata-containers"
        # Kata's `cd destdir; tar -c .`: ./-prefixed names, with the directories above the files.
        assert [line.split()[-1] if "->" not in line else line.split()[-3] for line in listing] == [
            "./", "./opt/", "./opt/kata/", "./opt/kata/share/", f"{share}/",
            f"{share}/kata-containers.img", f"{share}/kata-debian-bookworm.image", f"{share}/root_hash_base.txt"]
        assert all(" 0/0 " in line for line in listing), listing
        assert all("2023-11-14" in line for line in listing), listing
        assert [line.split()[0] for line in listing] == ["drwxr-xr-x"] * 5 + ["lrwxrwxrwx", "-rw-r--r--", "-rw-r--r--"]
    assert digests[0] == digests[1], "two builds gave different tarballs"


def test_the_root_hash_file_is_extracted_by_kata_s_exact_name(tmp_path: Path):
    """Kata's root-hash collector: `tar --zstd -tf` then `-xf` with ./opt/.../root_hash_base.txt."""
    out = tmp_path / "out"
    options = ReleaseOptions(layout="kata", tarball=True)
    tarball = write_release_tarballs(out, arrange_kata_layout(out, artifacts_in(out), options, "debian", "bookworm"),
                                     options, 1700000000, Runner())[0]
    name = "./opt/kata/share/kata-containers/root_hash_base.txt"
    listed = subprocess.run(["tar", "--zstd", "-tf", str(tarball), name], capture_output=True, text=True)
    assert (listed.returncode, listed.stdout) == (0, name + "\n"), listed.stderr
    into = tmp_path / "collected"
    into.mkdir()
    subprocess.run(["tar", "--zstd", "-xf", str(tarball), "-C", str(into), name], check=True)
    assert (into / name).read_text() == PARAMS
    # GNU tar matches neither form against the other: the old, unprefixed name finds nothing.
    assert subprocess.run(["tar", "--zstd", "-tf", str(tarball), name[2:]], capture_output=True).returncode != 0


def test_an_unsafe_tarball_is_refused_before_anything_is_written(tmp_path: Path):
    from osbuilder.release.layout import check_host_safe, host_unsafe_member

    for name in ("./.dockerenv", "./etc/hostname", "etc/hosts", "./etc/mtab", "./etc/resolv.conf", "./dev/",
                 "./dev/null", "./proc/1/x", "sys/kernel"):
        assert host_unsafe_member(name) is not None, name
    for name in ("./", "./opt/", "./etc/kata/x", "./opt/kata/dev/x", "./device", "./etc/hostname.d/x"):
        assert host_unsafe_member(name) is None, name
    with pytest.raises(UserError, match="would not be host-safe: it holds etc/resolv.conf"):
        check_host_safe("x.tar.zst", ["./", "./etc/", "./etc/resolv.conf"])
    options = ReleaseOptions(layout="kata", tarball=True, prefix=Path("/proc/kata"))
    with pytest.raises(UserError, match="it holds proc/kata/share/kata-containers, under /proc") as refused:
        options.validate()
    assert "--prefix" in refused.value.hint
    out = tmp_path / "out"
    placed = arrange_kata_layout(out, artifacts_in(out), options, "debian", "bookworm")
    with pytest.raises(UserError, match="under /proc"):
        write_release_tarballs(out, placed, options, 1700000000, Runner())
    assert not list(out.glob("*.tar.*"))


def test_three_release_tarballs_untar_into_their_union(tmp_path: Path):
    """Kata's merge step untars every kata-static-*.tar.zst into one tree: the plain image,
    the confidential image and the initrd give every file of each, and share only identical
    directories."""
    tarballs = []
    for name, variant in (("plain", None), ("confidential", "confidential")):
        out = tmp_path / name
        options = ReleaseOptions(layout="kata", tarball=True, variant=variant)
        placed = arrange_kata_layout(out, artifacts_in(out, variant or "base"), options, "debian", "bookworm")
        made = write_release_tarballs(out, placed, options, 1700000000, Runner())
        tarballs += made if variant is None else made[:1]
    assert [t.name for t in tarballs] == ["kata-static-rootfs-image.tar.zst", "kata-static-rootfs-initrd.tar.zst",
                                          "kata-static-rootfs-image-confidential.tar.zst"]
    merged = tmp_path / "merged"
    merged.mkdir()
    files: dict[str, str] = {}
    for tarball in tarballs:
        listing = subprocess.run(["tar", "--zstd", "-tvf", str(tarball)], capture_output=True, text=True,
                                 check=True).stdout.splitlines()
        for line in listing:
            name = line.split()[5]
            if not line.startswith("d"):
                assert name not in files, f"{name} is in {files[name]} and {tarball.name}"
                files[name] = tarball.name
            else:
                assert line.split()[0] == "drwxr-xr-x"
        subprocess.run(["tar", "--zstd", "-xf", str(tarball), "-C", str(merged), "--keep-old-files"], check=True)
    share = merged / "opt/kata/share/kata-containers"
    assert sorted(os.listdir(share)) == sorted([
        "kata-containers.img", "kata-debian-bookworm.image", "root_hash_base.txt",
        "kata-containers-initrd.img", "kata-debian-bookworm.initrd",
        "kata-containers-confidential.img", "kata-debian-bookworm-confidential.image", "root_hash_confidential.txt"])
    assert os.readlink(share / "kata-containers-confidential.img") == "kata-debian-bookworm-confidential.image"


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


def test_the_root_hash_label_is_the_variant_base_or_the_one_given():
    from osbuilder.pack.image import ImageOptions, ImagePacker

    packer = ImagePacker()
    assert ImageOptions(verity=True).root_hash_file == "root_hash_base.txt"
    assert packer.with_release_defaults(ImageOptions(verity=True), "confidential").root_hash_file == \
        "root_hash_confidential.txt"
    given = ImageOptions(verity=True, root_hash_label="nvidia-gpu")
    assert packer.with_release_defaults(given, "confidential").root_hash_file == "root_hash_nvidia-gpu.txt"
    for options, message in ((ImageOptions(root_hash_label="base"), "add --verity"),
                             (ImageOptions(verity=True, root_hash_label="../x"), "is not a plain label")):
        with pytest.raises(UserError, match=message):
            options.validate()


def test_each_image_of_a_merged_release_reads_its_own_root_hash_file(tmp_path: Path):
    """A merged release holds one root-hash file per measured variant; an older one root_hash.txt."""
    from osbuilder.pack.image import root_hash_beside

    share = tmp_path / "share"
    share.mkdir()
    for label in ("base", "confidential", "nvidia-gpu-confidential"):
        (share / f"root_hash_{label}.txt").write_text(f"root_hash={label}\n")
    assert root_hash_beside(share / "kata-containers.img").name == "root_hash_base.txt"
    assert root_hash_beside(share / "kata-ubuntu-resolute.image").name == "root_hash_base.txt"
    assert root_hash_beside(share / "kata-containers-confidential.img").name == "root_hash_confidential.txt"
    assert root_hash_beside(share / "kata-ubuntu-resolute-confidential.image").name == "root_hash_confidential.txt"
    assert root_hash_beside(share / "kata-containers-nvidia-gpu-confidential.img").name == \
        "root_hash_nvidia-gpu-confidential.txt"
    old = tmp_path / "old"
    old.mkdir()
    assert root_hash_beside(old / "kata-containers.img") is None
    (old / "root_hash.txt").write_text("root_hash=old\n")
    assert root_hash_beside(old / "kata-containers.img").name == "root_hash.txt"
    (old / "root_hash_mine.txt").write_text("root_hash=mine\n")  # --root-hash-label mine: the one there is its
    assert root_hash_beside(old / "kata-containers.img").name == "root_hash_mine.txt"
