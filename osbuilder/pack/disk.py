"""Disk layout: MBR partition tables, the NVDIMM "pfn info" block, sizing and alignment.

With the DAX header (docs/kata-contract.md, disk layout) the image reads correctly both as a plain
disk (MBR #1, partition at 3 MiB) and as an fsdax NVDIMM namespace, which the kernel
sees from 2 MiB on (MBR #2, partition 1 MiB after it). Both tables describe the same
bytes and end at the end of the image.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

SECTOR = 512
MiB = 1 << 20
PFN_OFFSET = 4096
PFN_SIZE = 4096
PFN_SIGNATURE = b"NVDIMM_PFN_INFO\0"
NAMESPACE_OFFSET = 2 * MiB  # where an fsdax namespace's data starts
DAX_PARTITION_OFFSET = 3 * MiB
PLAIN_PARTITION_OFFSET = 1 * MiB
LINUX_PARTITION = 0x83


def fletcher64(block: bytes) -> int:
    """The kernel's nd_fletcher64: little-endian u32 words, a 32-bit low sum, a 64-bit high sum."""
    lo, hi = 0, 0
    for (word,) in struct.iter_unpack("<I", block):
        lo = (lo + word) & 0xFFFFFFFF
        hi += lo
    return ((hi << 32) | lo) & 0xFFFFFFFFFFFFFFFF


def pfn_info_block() -> bytes:
    """struct nd_pfn_sb with upstream's values: byte-identical to Kata's image builder."""
    block = bytearray(PFN_SIZE)
    block[0:16] = PFN_SIGNATURE
    struct.pack_into("<IHHQQIIII", block, 48,
                     0,  # flags
                     0,  # version_major
                     2,  # version_minor
                     2 * MiB,  # dataoff
                     0,  # npfns
                     1,  # mode: PFN_MODE_RAM
                     0,  # start_pad
                     0,  # end_trunc
                     2 * MiB)  # align
    struct.pack_into("<Q", block, PFN_SIZE - 8, fletcher64(bytes(block)))
    return bytes(block)


@dataclass(frozen=True)
class Partition:
    start: int  # bytes from the start of the disk
    size: int  # bytes
    bootable: bool = False
    type_id: int = LINUX_PARTITION


def _chs(lba: int) -> bytes:
    heads, sectors = 255, 63
    cylinder = lba // (heads * sectors)
    if cylinder > 1023:
        return b"\xfe\xff\xff"
    head = (lba // sectors) % heads
    sector = lba % sectors + 1
    return bytes((head, ((cylinder >> 2) & 0xC0) | sector, cylinder & 0xFF))


def mbr(partitions: list[Partition], signature: int, base: int = 0) -> bytes:
    """A 512-byte MBR; partition offsets are made relative to `base`."""
    if len(partitions) > 4:
        raise ValueError("an MBR holds at most four partitions")
    sector = bytearray(SECTOR)
    struct.pack_into("<I", sector, 440, signature)
    for index, part in enumerate(partitions):
        first = (part.start - base) // SECTOR
        count = part.size // SECTOR
        entry = (bytes((0x80 if part.bootable else 0,)) + _chs(first) + bytes((part.type_id,))
                 + _chs(first + count - 1) + struct.pack("<II", first, count))
        sector[446 + 16 * index: 462 + 16 * index] = entry
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


@dataclass(frozen=True)
class Layout:
    """Where everything goes in one disk image."""

    size: int
    dax: bool
    partitions: tuple[Partition, ...]

    @property
    def first_partition_offset(self) -> int:
        return self.partitions[0].start

    def header(self, signature: int) -> list[tuple[int, bytes]]:
        """(offset, bytes) pieces to write before the partitions' contents."""
        pieces = [(0, mbr(list(self.partitions), signature))]
        if self.dax:
            pieces.append((PFN_OFFSET, pfn_info_block()))
            pieces.append((NAMESPACE_OFFSET, mbr(list(self.partitions), signature, base=NAMESPACE_OFFSET)))
        return pieces


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def plan_layout(content_sizes: list[int], dax: bool, align: int) -> Layout:
    """Lay out partitions of at least `content_sizes` bytes; the last one runs to the end of an
    image whose size is a multiple of `align`."""
    offset = DAX_PARTITION_OFFSET if dax else PLAIN_PARTITION_OFFSET
    need = offset + sum(round_up(s, MiB) for s in content_sizes)
    size = round_up(need, align)
    partitions = []
    for index, content in enumerate(content_sizes):
        last = index == len(content_sizes) - 1
        part_size = size - offset if last else round_up(content, MiB)
        partitions.append(Partition(start=offset, size=part_size, bootable=len(content_sizes) > 1 and index == 0))
        offset += part_size
    return Layout(size=size, dax=dax, partitions=tuple(partitions))
