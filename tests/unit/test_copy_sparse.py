"""A filesystem made apart (xfs, erofs, a verity tree) is copied into the disk image at its
partition's offset: byte for byte, its holes left holes, by the kernel on one filesystem
(copy_file_range) and by reads and writes across two (copy_file_range refuses: EXDEV)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from osbuilder.pack.image import _copy_sparse

MiB = 1 << 20
OFFSET = 3 * MiB


def sparse_source(path: Path) -> bytes:
    """1 MiB of data, an 8 MiB hole, 1 MiB of data and a 1,000-byte tail: what it reads as."""
    first, second = os.urandom(MiB), os.urandom(MiB + 1000)
    with open(path, "wb") as f:
        f.write(first)
        f.seek(9 * MiB)
        f.write(second)
    return first + bytes(8 * MiB) + second


@pytest.mark.parametrize("where", ["same filesystem", "another filesystem"])
def test_the_copy_is_exact_and_keeps_the_holes(tmp_path, where):
    # /dev/shm is tmpfs, the work directories ext4: across them copy_file_range gives EXDEV.
    source_dir = Path(tempfile.mkdtemp(dir="/dev/shm")) if where == "another filesystem" else tmp_path
    try:
        source = source_dir / "rootfs.xfs"
        expected = sparse_source(source)
        if where == "another filesystem":
            with pytest.raises(OSError):  # the fallback is what this case runs
                with open(source, "rb") as src, open(tmp_path / "probe", "wb") as dst:
                    os.copy_file_range(src.fileno(), dst.fileno(), 10, 0, 0)
        image = tmp_path / "disk.img"
        fd = os.open(image, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, OFFSET + len(expected) + MiB)
            _copy_sparse(source, fd, OFFSET)
        finally:
            os.close(fd)
        data = image.read_bytes()
        assert data[OFFSET:OFFSET + len(expected)] == expected
        assert data[:OFFSET] == bytes(OFFSET) and data[OFFSET + len(expected):] == bytes(MiB)
        # The 8 MiB hole and the space around the partition take no blocks.
        assert image.stat().st_blocks * 512 < 4 * MiB
    finally:
        if source_dir != tmp_path:
            for child in source_dir.iterdir():
                child.unlink()
            source_dir.rmdir()
