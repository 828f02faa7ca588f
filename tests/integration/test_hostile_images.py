"""Damaged and hostile disk images, made with the real mkfs and then altered (an inode that
claims gigabytes, a zeroed superblock, flipped erofs bytes): inspect and check refuse each
with exit 2 and one line, within a deadline and a memory cap, writing no large file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.hostile import MiB, assert_clean_refusal, run_limited, small_guest

pytestmark = pytest.mark.slow

PARTITION_OFFSET = 1 * MiB  # --no-dax: one MBR, the partition at 1 MiB
SUMMARY = "/var/lib/osbuilder/osbuilder.yaml"


@pytest.fixture(scope="module")
def guest(tmp_path_factory) -> Path:
    return small_guest(tmp_path_factory.mktemp("guest"))


def image(guest: Path, out: Path, fs: str) -> Path:
    made = run_limited("image", guest, "-o", out, "--fs", fs, "--no-dax", timeout=300, memory=4096 * MiB,
                       file_size=2048 * MiB)
    assert made.returncode == 0, made.stderr
    return out


@pytest.mark.parametrize("claimed", [1 << 30, 4 << 30], ids=["1GiB", "4GiB"])
def test_an_ext4_summary_inode_claiming_gigabytes_is_refused_before_it_is_read(guest, tmp_path, claimed):
    disk = image(guest, tmp_path / "guest.img", "ext4")
    device = f"{disk}?offset={PARTITION_OFFSET}"
    stat = subprocess.run(["debugfs", "-R", f"stat {SUMMARY}", device], capture_output=True, text=True).stdout
    inode = re.search(r"Inode: (\d+)", stat).group(1)
    subprocess.run(["debugfs", "-w", "-R", f"sif <{inode}> size {claimed}", device], check=True,
                   capture_output=True)
    for command in (("inspect", disk), ("inspect", disk, "--json"),
                    ("check", disk, "--host-cgroup-driver", "cgroupfs")):
        result = run_limited(*command, timeout=60, memory=1024 * MiB, file_size=64 * MiB)
        assert_clean_refusal(result, f"claims {claimed} bytes", "limit")


def test_an_xfs_image_with_a_zeroed_superblock_is_bad_input(guest, tmp_path):
    disk = image(guest, tmp_path / "guest.img", "xfs")
    with open(disk, "r+b") as f:
        f.seek(PARTITION_OFFSET)
        f.write(bytes(4096))
    for command in (("inspect", disk), ("check", disk, "--host-cgroup-driver", "cgroupfs")):
        result = run_limited(*command, timeout=60)
        assert result.returncode == 2 and "Traceback" not in result.stderr and "internal" not in result.stderr, \
            result.stderr
        assert str(disk) in result.stderr


def test_a_damaged_erofs_image_is_bad_input(guest, tmp_path):
    disk = image(guest, tmp_path / "guest.img", "erofs")
    data = bytearray(disk.read_bytes())
    end = len(data.rstrip(b"\0"))
    for start in range(PARTITION_OFFSET + 4096, end, max(4096, (end - PARTITION_OFFSET) // 8)):
        data[start:start + 2048] = bytes(b ^ 0xA5 for b in data[start:start + 2048])
    disk.write_bytes(data)
    result = run_limited("inspect", disk, timeout=120, file_size=256 * MiB)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "internal" not in result.stderr and str(disk) in result.stderr
