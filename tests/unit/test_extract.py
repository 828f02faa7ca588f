"""Unpacking payloads into a guest: hostile tarballs are refused whole, with the member
named, and nothing outside the rootfs is created or changed; good ones keep owners, modes,
links and hard links."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from osbuilder.foundation.errors import UserError
from osbuilder.foundation.fsutil import GuestRoot
from osbuilder.rootfs.extract import safe_extract
from osbuilder.foundation.runner import Runner
from tests.helpers import snapshot


def add(tar: tarfile.TarFile, name: str, *, data: bytes | None = None, kind: bytes = tarfile.REGTYPE,
        link: str = "", mode: int = 0o644, uid: int = 0, gid: int = 0, device: tuple[int, int] = (0, 0)) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.uid, info.gid, info.mtime = kind, link, mode, uid, gid, 1700000000
    info.devmajor, info.devminor = device
    if data is not None:
        info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def make_tar(path: Path, build) -> Path:
    with tarfile.open(path, "w") as tar:
        build(tar)
    return path


@pytest.fixture
def world(tmp_path: Path):
    """A rootfs, a victim file and directory beside it, and a snapshot of everything outside
    the rootfs that a hostile archive might touch."""
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("host data\n")
    (tmp_path / "victim-dir").mkdir()
    work = tmp_path / "work"
    work.mkdir()
    return root, victim, work


def outside(tmp_path: Path) -> dict:
    return {path: entry for path, entry in snapshot(tmp_path).items()
            if path.split("/")[0] not in ("rootfs", "work", "payload.tar")}


HOSTILE = {
    "dot-dot name": (lambda v: lambda t: add(t, f"../{v.name}", data=b"owned\n"), "has a '..' component"),
    "absolute name": (lambda v: lambda t: add(t, str(v), data=b"owned\n"), "has an absolute name"),
    "symlink then member": (lambda v: lambda t: (add(t, "escape", kind=tarfile.SYMTYPE, link="../.."),
                                                 add(t, f"escape/{v.name}", data=b"owned\n")),
                            "is a symlink that leaves the tree"),
    "nested symlink escape": (lambda v: lambda t: (add(t, "etc", kind=tarfile.DIRTYPE, mode=0o755),
                                                   add(t, "etc/up", kind=tarfile.SYMTYPE, link="../../victim-dir"),
                                                   add(t, "etc/up/new", data=b"owned\n")),
                              "is a symlink that leaves the tree"),
    "hard link escape": (lambda v: lambda t: add(t, "hard", kind=tarfile.LNKTYPE, link=f"../{v.name}"),
                         "is a hard link outside the tree"),
    "absolute hard link": (lambda v: lambda t: add(t, "hard", kind=tarfile.LNKTYPE, link=str(v)),
                           "is a hard link outside the tree"),
    "device node": (lambda v: lambda t: add(t, "dev/sda", kind=tarfile.BLKTYPE, device=(8, 0), mode=0o600),
                    "is a device node"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_archives_are_refused_whole(world, tmp_path: Path, case: str):
    root, victim, work = world
    build, message = HOSTILE[case]

    def with_a_good_member_first(tar):
        add(tar, "etc/good", data=b"fine\n")  # must not be written either: nothing is, before the error
        build(victim)(tar)

    archive = make_tar(tmp_path / "payload.tar", with_a_good_member_first)
    before_outside, before_root = outside(tmp_path), snapshot(root)
    with pytest.raises(UserError) as err:
        safe_extract(archive, GuestRoot(root), work, Runner())
    assert message in str(err.value) and str(archive) in str(err.value)
    assert victim.read_text() == "host data\n"
    assert outside(tmp_path) == before_outside and snapshot(root) == before_root


def test_devices_are_allowed_where_the_payload_may_hold_them(world, tmp_path: Path):
    root, _, work = world
    archive = make_tar(tmp_path / "payload.tar", HOSTILE["device node"][0](None))
    safe_extract(archive, GuestRoot(root), work, Runner(), allow_devices=True)
    st = (root / "dev/sda").lstat()
    assert stat.S_ISBLK(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (8, 0)


def test_links_already_in_the_tree_cannot_lead_members_out(world, tmp_path: Path):
    root, victim, work = world
    os.symlink(str(tmp_path / "victim-dir"), root / "etc/host")  # absolute: the guest's /tmp/.../victim-dir
    os.symlink(str(victim), root / "etc/shadow")
    archive = make_tar(tmp_path / "payload.tar", lambda t: (add(t, "etc/host/new", data=b"in the guest\n"),
                                                           add(t, "etc/shadow", data=b"replaced\n", mode=0o640)))
    before = outside(tmp_path)
    safe_extract(archive, GuestRoot(root), work, Runner())
    assert outside(tmp_path) == before and victim.read_text() == "host data\n"
    assert (root / str(tmp_path / "victim-dir/new").lstrip("/")).read_text() == "in the guest\n"
    assert not (root / "etc/shadow").is_symlink() and (root / "etc/shadow").read_text() == "replaced\n"


def test_a_good_archive_keeps_owners_modes_and_links(world, tmp_path: Path):
    root, _, work = world

    def build(tar):
        add(tar, "./usr", kind=tarfile.DIRTYPE, mode=0o755)
        add(tar, "./usr/bin/kata-agent", data=b"\x7fELF agent", mode=0o755)
        add(tar, "./usr/bin/tool", data=b"setuid tool", mode=0o4755, uid=0, gid=42)
        add(tar, "./usr/bin/alias", kind=tarfile.LNKTYPE, link="./usr/bin/kata-agent")
        add(tar, "./usr/lib/systemd/system/kata-agent.service", data=b"[Service]\n", uid=1000, gid=1000)
        add(tar, "./etc/resolv.conf", kind=tarfile.SYMTYPE, link="/run/resolv.conf")
        add(tar, "./run/fifo", kind=tarfile.FIFOTYPE, mode=0o600)

    plain = make_tar(tmp_path / "payload.tar", build)
    compressed = tmp_path / "payload.tar.zst"
    subprocess.run(["zstd", "-q", "-f", str(plain), "-o", str(compressed)], check=True)
    unpacked = safe_extract(compressed, GuestRoot(root), work, Runner())
    assert unpacked.files == ("/usr/bin/kata-agent", "/usr/bin/tool", "/usr/lib/systemd/system/kata-agent.service")
    agent = (root / "usr/bin/kata-agent").lstat()
    assert agent.st_nlink == 2 and (root / "usr/bin/alias").lstat().st_ino == agent.st_ino
    tool = (root / "usr/bin/tool").lstat()
    assert stat.S_IMODE(tool.st_mode) == 0o4755 and (tool.st_uid, tool.st_gid) == (0, 42)
    unit = (root / "usr/lib/systemd/system/kata-agent.service").lstat()
    assert (unit.st_uid, unit.st_gid, int(unit.st_mtime)) == (1000, 1000, 1700000000)
    assert os.readlink(root / "etc/resolv.conf") == "/run/resolv.conf"
    assert stat.S_ISFIFO((root / "run/fifo").lstat().st_mode)
    assert list(work.iterdir()) == [], "the decompressed copy was left behind"


def test_a_file_that_is_no_tarball_is_one_error(world, tmp_path: Path):
    root, _, work = world
    junk = tmp_path / "payload.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(UserError, match="is not a readable tarball"):
        safe_extract(junk, GuestRoot(root), work, Runner())
