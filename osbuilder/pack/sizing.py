"""What a tree needs on disk, measured from the tree itself (never by trial mounting)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from osbuilder.foundation.fsutil import data_regions


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


def measure_tree(root: Path, block_size: int = 4096, inline_symlink_max: int = 59) -> TreeStats:
    seen: set[tuple[int, int]] = set()
    inodes = directories = data_blocks = dir_blocks = long_links = largest = apparent = largest_bytes = 0
    stack = [str(root)]
    while stack:
        directory = stack.pop()
        directories += 1
        inodes += 1
        entry_bytes = 24  # "." and ".."
        with os.scandir(directory) as it:
            for item in it:
                entry_bytes += (8 + len(os.fsencode(item.name)) + 3) & ~3
                st = item.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(item.path)
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
        dir_blocks += -(-entry_bytes // (block_size - 64)) + (1 if entry_bytes > block_size else 0)
    return TreeStats(block_size, inodes, directories, data_blocks, dir_blocks, long_links, largest, apparent,
                     largest_bytes)
