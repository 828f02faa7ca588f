"""What a tree needs on disk, measured from the tree itself (never by trial mounting)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from osbuilder.foundation.fsutil import TreeListing, data_regions


def _data_bytes(path: str, size: int, allocated: int, block: int) -> int:
    """Bytes of real data in a file, rounded up per data region; holes cost nothing."""
    if allocated >= size:
        return -(-size // block) * block
    total = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        for start, end in data_regions(fd, size):
            total += (-(-end // block) - start // block) * block
    finally:
        os.close(fd)
    return total


@dataclass(frozen=True)
class TreeStats:
    block_size: int
    inodes: int  # distinct inodes, directories included, hard links counted once
    directories: int
    data_blocks: int  # file data, per file rounded up to whole blocks, holes excluded
    directory_blocks: int  # estimated directory blocks (entries of 8 + name bytes, 4-aligned)
    long_symlinks: int  # targets too long to live in the inode
    largest_file_blocks: int
    apparent_bytes: int
    largest_file_bytes: int = 0  # apparent size, holes included

    @property
    def content_bytes(self) -> int:
        return (self.data_blocks + self.directory_blocks + self.long_symlinks) * self.block_size


def measure_tree(listing: TreeListing, block_size: int = 4096, inline_symlink_max: int = 59) -> TreeStats:
    seen: set[tuple[int, int]] = set()
    # Each directory's entry bytes, by its name relative to the root (b"" is the root).
    entry_bytes: dict[bytes, int] = {b"": 24}  # "." and ".."
    inodes = 1
    data_blocks = long_links = largest = apparent = largest_bytes = 0
    for name, item, st in listing.entries:
        parent, _, base = name.rpartition(b"/")
        entry_bytes[parent] += (8 + len(base) + 3) & ~3
        if stat.S_ISDIR(st.st_mode):
            entry_bytes[name] = 24
            inodes += 1
            continue
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
        inodes += 1
        if stat.S_ISREG(st.st_mode):
            data = _data_bytes(item.path, st.st_size, st.st_blocks * 512, block_size)
            blocks = data // block_size
            data_blocks += blocks
            largest = max(largest, blocks)
            apparent += st.st_size
            largest_bytes = max(largest_bytes, st.st_size)
        elif stat.S_ISLNK(st.st_mode) and st.st_size > inline_symlink_max:
            long_links += 1
    # Leave room in each directory block for its checksum tail and hash-tree index.
    dir_blocks = sum(-(-size // (block_size - 64)) + (1 if size > block_size else 0) for size in entry_bytes.values())
    return TreeStats(block_size, inodes, len(entry_bytes), data_blocks, dir_blocks, long_links, largest, apparent,
                     largest_bytes)
