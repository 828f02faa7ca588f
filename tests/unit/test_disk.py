"""The disk layout, byte by byte, checked with sfdisk and an independent checksum."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from osbuilder.pack.disk import MiB, pfn_info_block, plan_layout


def independent_fletcher64(data: bytes) -> int:
    lo32, hi32 = 0, 0
    for i in range(0, len(data), 4):
        lo32 = (lo32 + int.from_bytes(data[i:i + 4], "little")) % 2**32
        hi32 = hi32 + lo32
    return (hi32 << 32 | lo32) % 2**64


def test_pfn_block_fields_and_checksum():
    block = pfn_info_block()
    assert len(block) == 4096
    assert block[0:16] == b"NVDIMM_PFN_INFO\0"
    assert block[16:48] == bytes(32)  # uuid, parent_uuid
    flags, major, minor, dataoff, npfns, mode, start_pad, end_trunc, align = struct.unpack_from("<IHHQQIIII", block, 48)
    assert (flags, major, minor, dataoff, npfns, mode, start_pad, end_trunc, align) == (0, 0, 2, 2 * MiB, 0, 1, 0, 0, 2 * MiB)
    assert block[88:4088] == bytes(4000)
    stored = int.from_bytes(block[4088:], "little")
    assert stored == independent_fletcher64(block[:4088] + bytes(8))
    corrupted = bytearray(block)
    corrupted[100] ^= 1
    assert independent_fletcher64(bytes(corrupted[:4088]) + bytes(8)) != stored


def sfdisk_partitions(path: Path) -> list[str]:
    out = subprocess.run(["sfdisk", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    return [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith(str(path))]


def write_header(tmp_path: Path, layout, signature: int = 0x1234ABCD) -> Path:
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(layout.size)
        for offset, data in layout.header(signature):
            f.seek(offset)
            f.write(data)
    return disk


def test_dax_layout_has_two_tables_over_the_same_bytes(tmp_path: Path):
    layout = plan_layout([100 * MiB], dax=True, align=128 * MiB)
    assert layout.size == 128 * MiB
    disk = write_header(tmp_path, layout)
    sectors = layout.size // 512
    assert sfdisk_partitions(disk) == [f"start=        6144, size={sectors - 6144:>12}, type=83"]
    namespace = tmp_path / "namespace.img"
    subprocess.run(["dd", f"if={disk}", f"of={namespace}", "bs=1M", "skip=2", "status=none"], check=True)
    assert sfdisk_partitions(namespace) == [f"start=        2048, size={sectors - 6144:>12}, type=83"]
    data = disk.read_bytes()
    assert data[4096:4096 + 16] == b"NVDIMM_PFN_INFO\0"
    assert data[440:444] == (0x1234ABCD).to_bytes(4, "little") and data[510:512] == b"\x55\xaa"


def test_plain_layout_starts_at_one_mib(tmp_path: Path):
    layout = plan_layout([10 * MiB + 1], dax=False, align=MiB)
    assert layout.size == 12 * MiB
    disk = write_header(tmp_path, layout)
    assert sfdisk_partitions(disk) == [f"start=        2048, size={12 * 2048 - 2048:>12}, type=83"]
    assert disk.read_bytes()[4096:4112] == bytes(16)


@pytest.mark.parametrize("align_mib", [1, 4, 128])
def test_image_size_is_a_multiple_of_the_alignment(align_mib: int):
    layout = plan_layout([333 * MiB + 5], dax=True, align=align_mib * MiB)
    assert layout.size % (align_mib * MiB) == 0
    part = layout.partitions[0]
    assert part.start + part.size == layout.size and part.size >= 333 * MiB + 5


def test_verity_style_layout_puts_the_hash_partition_last():
    layout = plan_layout([50 * MiB, 1 * MiB], dax=False, align=MiB)
    data, hashes = layout.partitions
    assert data.bootable and not hashes.bootable
    assert data.start == MiB and hashes.start == data.start + data.size
    assert hashes.start + hashes.size == layout.size
