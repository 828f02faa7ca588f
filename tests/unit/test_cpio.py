"""The newc writer against GNU cpio, on a tree with every kind of entry."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tracemalloc
from pathlib import Path

import pytest

from osbuilder.foundation.errors import BuildError

from osbuilder.pack.cpio import Entry, NewcWriter, archive_tree
from tests.helpers import hardlink_groups, snapshot

EPOCH = 1700000000


@pytest.fixture
def odd_tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "dir with space/sub").mkdir(parents=True)
    (root / "ünïcødé-dïr").mkdir()
    (root / "dir with space/file name.txt").write_text("spaces\n")
    (root / "ünïcødé-dïr/ファイル").write_text("utf-8\n")
    (root / "empty").write_bytes(b"")
    big = root / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    (root / "links").mkdir()
    (root / "links/a").write_text("hardlinked data\n")
    os.link(root / "links/a", root / "links/b")
    os.link(root / "links/a", root / "dir with space/c")
    os.symlink("../big.bin", root / "links/rel")
    os.symlink("/etc/passwd", root / "links/abs")
    os.symlink("dangling-target", root / "links/dangling")
    os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(root / "sda", stat.S_IFBLK | 0o660, os.makedev(8, 0))
    os.mkfifo(root / "fifo", 0o640)
    suid = root / "suid"
    suid.write_bytes(b"\x7fELF")
    os.chmod(suid, 0o4755)
    os.chmod(root / "dir with space/sub", 0o1777)
    os.chown(root / "empty", 1234, 5678)
    os.lchown(root / "links/rel", 42, 43)
    future = EPOCH + 10_000_000
    os.utime(big, (future, future))
    os.utime(root / "empty", (EPOCH - 5, EPOCH - 5))
    return root


def pack(root: Path, out: Path, extra: list[Entry] | None = None) -> bytes:
    with open(out, "wb") as f:
        archive_tree(root, f, EPOCH, extra=extra)
    return out.read_bytes()


def gnu_extract(archive: Path, dest: Path) -> None:
    dest.mkdir()
    with open(archive, "rb") as f:
        subprocess.run(["cpio", "-i", "-d", "-m", "--quiet", "--no-absolute-filenames"], stdin=f, cwd=dest, check=True)


def test_gnu_cpio_extracts_an_identical_tree(odd_tree: Path, tmp_path: Path):
    archive = tmp_path / "a.cpio"
    pack(odd_tree, archive)
    out = tmp_path / "extracted"
    gnu_extract(archive, out)
    assert snapshot(out) == snapshot(odd_tree)
    assert hardlink_groups(out) == [["dir with space/c", "links/a", "links/b"]]
    assert (out / "links/a").read_text() == "hardlinked data\n"


def test_gnu_cpio_lists_sorted_names_and_the_trailer_is_last(odd_tree: Path, tmp_path: Path):
    archive = tmp_path / "a.cpio"
    data = pack(odd_tree, archive)
    listed = subprocess.run(["cpio", "-t", "--quiet"], stdin=open(archive, "rb"), capture_output=True,
                            check=True).stdout.decode().splitlines()
    expected = sorted(str(p.relative_to(odd_tree)) for p in odd_tree.rglob("*"))
    assert listed == sorted(listed, key=os.fsencode) and sorted(listed) == sorted(expected)
    assert len(data) % 512 == 0 and b"TRAILER!!!" in data[-1024:]


def test_mtimes_are_clamped_and_hardlink_data_is_stored_once(odd_tree: Path, tmp_path: Path):
    archive = tmp_path / "a.cpio"
    data = pack(odd_tree, archive)
    assert data.count(b"hardlinked data\n") == 1
    out = tmp_path / "extracted"
    gnu_extract(archive, out)
    assert int((out / "big.bin").stat().st_mtime) == EPOCH
    assert int((out / "empty").stat().st_mtime) == EPOCH - 5
    verbose = subprocess.run(["cpio", "-tv", "--quiet"], stdin=open(archive, "rb"), capture_output=True,
                             check=True).stdout.decode()
    assert any(line.split()[1] == "3" and line.endswith("links/a") for line in verbose.splitlines())


def test_two_packs_are_bit_identical_even_from_a_copy(odd_tree: Path, tmp_path: Path):
    first = pack(odd_tree, tmp_path / "1.cpio")
    second = pack(odd_tree, tmp_path / "2.cpio")
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(odd_tree), str(copy)], check=True)  # new inode numbers, same content
    third = pack(copy, tmp_path / "3.cpio")
    assert first == second == third


def test_extra_entries_replace_tree_paths(odd_tree: Path, tmp_path: Path):
    (odd_tree / "init").write_text("user's own init")
    archive = tmp_path / "a.cpio"
    pack(odd_tree, archive, extra=[Entry.symlink("init", "/sbin/init", mtime=EPOCH)])
    out = tmp_path / "x"
    gnu_extract(archive, out)
    assert os.readlink(out / "init") == "/sbin/init"
    assert (odd_tree / "init").read_text() == "user's own init"


def test_file_data_is_streamed_not_held_in_memory(tmp_path: Path):
    root = tmp_path / "tree"
    root.mkdir()
    with open(root / "large", "wb") as f:
        f.truncate(256 * 1024 * 1024)  # sparse: costs no disk
    sink = open(os.devnull, "wb")
    tracemalloc.start()
    archive_tree(root, sink, EPOCH)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"peak Python allocation {peak} bytes for a 256 MiB file"


def test_a_file_that_changes_size_is_an_error(tmp_path: Path):
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    writer = NewcWriter(io.BytesIO())
    with pytest.raises(BuildError, match="changed size"):
        writer.add(Entry(name=b"f", mode=stat.S_IFREG | 0o644, size=10, source=path))


def test_header_fields_are_exact():
    buf = io.BytesIO()
    with NewcWriter(buf) as writer:
        writer.add(Entry(name=b"dev/ttyS0", mode=stat.S_IFCHR | 0o600, uid=1, gid=2, mtime=3, ino=4,
                         rdev_major=4, rdev_minor=64))
    data = buf.getvalue()
    assert data[:6] == b"070701"
    fields = [int(data[6 + 8 * i: 14 + 8 * i], 16) for i in range(13)]
    assert fields == [4, stat.S_IFCHR | 0o600, 1, 2, 1, 3, 0, 0, 0, 4, 64, len(b"dev/ttyS0") + 1, 0]
    assert data[110:120] == b"dev/ttyS0\0"  # 110 + 10 is already 4-aligned: no padding
