"""Computed sizing under stress: many small files, and a large sparse file. Never ENOSPC."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from osbuilder.foundation.fsutil import sha256_file
from osbuilder.pack.disk import MiB
from tests.conftest import run_cli
from tests.helpers import make_minimal_guest, partition_bytes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def many_files(tmp_path_factory) -> Path:
    root = make_minimal_guest(tmp_path_factory.mktemp("many") / "guest", Path("/bin/busybox"))
    for d in range(100):
        directory = root / "srv" / f"dir{d:03d}"
        directory.mkdir(parents=True)
        for f in range(500):
            (directory / f"file-{f:04d}-with-a-longish-name").write_bytes(b"x" * ((d * 500 + f) % 97))
    return root


@pytest.fixture(scope="module")
def sparse_file(tmp_path_factory) -> Path:
    root = make_minimal_guest(tmp_path_factory.mktemp("sparse") / "guest", Path("/bin/busybox"))
    with open(root / "sparse.bin", "wb") as f:
        f.truncate(3 * 1024 * MiB)
        f.seek(1024 * MiB)
        f.write(os.urandom(MiB))
        f.seek(3 * 1024 * MiB - 4096)
        f.write(b"tail" * 1024)
    return root


def check_fs(fs: str, image: Path, work: Path) -> Path:
    part = partition_bytes(image, work / f"{fs}.part", MiB)
    command = {"ext4": ["e2fsck", "-fn"], "xfs": ["xfs_repair", "-n"], "erofs": ["fsck.erofs"]}[fs]
    subprocess.run(command + [str(part)], check=True, capture_output=True)
    return part


@pytest.mark.parametrize("fs", ["ext4", "xfs", "erofs"])
def test_fifty_thousand_small_files(many_files: Path, tmp_path: Path, fs: str):
    image = tmp_path / "many.img"
    result = run_cli("image", many_files, "--fs", fs, "--no-dax", "-o", image)
    assert result.returncode == 0, result.stderr
    part = check_fs(fs, image, tmp_path)
    if fs == "ext4":
        out = subprocess.run(["debugfs", "-R", "ls -p /srv/dir099", str(part)], capture_output=True, text=True,
                             check=True).stdout
        assert out.count("file-") == 500


@pytest.mark.parametrize("fs", ["ext4", "erofs"])
def test_large_sparse_file(sparse_file: Path, tmp_path: Path, fs: str):
    image = tmp_path / "sparse.img"
    result = run_cli("image", sparse_file, "--fs", fs, "--no-dax", "-o", image)
    assert result.returncode == 0, result.stderr
    assert image.stat().st_size < 512 * MiB, "holes were stored as data"
    part = check_fs(fs, image, tmp_path)
    dumped = tmp_path / "sparse.out"
    if fs == "ext4":
        subprocess.run(["debugfs", "-R", f"dump /sparse.bin {dumped}", str(part)], check=True, capture_output=True)
    else:
        subprocess.run(["fsck.erofs", f"--extract={tmp_path / 'x'}", str(part)], check=True, capture_output=True)
        dumped = tmp_path / "x/sparse.bin"
    assert sha256_file(dumped) == sha256_file(sparse_file / "sparse.bin")


def test_xfs_stores_sparse_files_densely_and_refuses_files_over_2_gib(sparse_file: Path, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("image", sparse_file, "--fs", "xfs", "--no-dax", "-o", out / "x.img")
    assert result.returncode == 2 and "copy at most 2 GiB per file" in result.stderr
    assert list(out.iterdir()) == []
    smaller = make_minimal_guest(tmp_path / "guest", Path("/bin/busybox"))
    with open(smaller / "sparse.bin", "wb") as f:
        f.truncate(512 * MiB)
        f.write(b"head")
    image = tmp_path / "x.img"
    result = run_cli("image", smaller, "--fs", "xfs", "--no-dax", "-o", image)
    assert result.returncode == 0, result.stderr
    check_fs("xfs", image, tmp_path)
