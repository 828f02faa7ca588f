"""The interface every filesystem implements, and what they share.

Filesystems are populated straight from a directory: no mount, no loop device, no root.
Sizes are computed from the tree; UUIDs, hash seeds and timestamps come from the caller,
so the same inputs give the same bytes. Each filesystem also reads one file back out of an
image it made, as a GuestView (the guest's osbuilder.yaml and its init, for boot and inspect).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from osbuilder.foundation.errors import UserError
from osbuilder.foundation.fsutil import GuestRoot, TreeListing, data_regions
from osbuilder.foundation.guest_layout import MACHINE_ID
from osbuilder.pack.sizing import TreeStats
from osbuilder.read.view import GuestView
from osbuilder.foundation.runner import Runner


@dataclass(frozen=True)
class FsSource:
    """An existing filesystem inside a file (a disk image's partition)."""

    image: Path
    offset: int
    length: int
    workdir: Path  # scratch space for tools that need the filesystem as a file of its own

    def copy_out(self, name: str) -> Path:
        """The filesystem as a file of its own (sparse), for tools that take no offset."""
        copy = self.workdir / name
        end = self.offset + self.length
        with open(self.image, "rb") as src, open(copy, "wb") as dst:
            dst.truncate(self.length)
            for begin, stop in data_regions(src.fileno(), end):
                begin, stop = max(begin, self.offset), min(stop, end)
                if begin >= stop:
                    continue
                src.seek(begin)
                dst.seek(begin - self.offset)
                remaining = stop - begin
                while remaining:
                    chunk = src.read(min(remaining, 4 << 20))
                    dst.write(chunk)
                    remaining -= len(chunk)
        return copy


@dataclass(frozen=True)
class FsRequest:
    image: Path  # the filesystem image file to create
    size: int | None  # exact bytes for filesystems that fill their partition
    epoch: int
    uuid: str
    block_size: int
    stats: TreeStats  # what the tree needs; sizes the filesystem's internals
    workdir: Path
    listing: TreeListing  # the tree to pack: its paths and their metadata, walked once
    offset: int = 0  # where in `image` the filesystem starts (filesystems that can write in place)
    # An empty /etc/machine-id (systemd fills it at boot) is added where the tree lacks one;
    # an extension image, mounted below /run/kata-extensions, gets none.
    machine_id: bool = True

    @property
    def tree(self) -> Path:
        return self.listing.root

    @property
    def adds_machine_id(self) -> bool:
        return self.machine_id and not has_empty_machine_id(self.tree)

    @property
    def device(self) -> str:
        """How libext2fs tools name a filesystem inside a larger file."""
        return f"{self.image}?offset={self.offset}" if self.offset else str(self.image)


class Filesystem(ABC):
    """Everything osbuilder knows of one filesystem: making it, sizing it, recognising it,
    and what a kernel needs to mount it (a new filesystem is one class here, plus its reader
    in read/summary.py)."""

    name: str
    magic: tuple[int, bytes]  # (offset into the filesystem, bytes) of its superblock magic
    kernel_module: str  # what a stock distribution kernel loads to mount it
    dax_rootflags: str  # mount options for a root on an NVDIMM with DAX
    # True: the image is as large as its content and is made before the layout is planned.
    content_sized: bool = False
    # True: can be made straight into the disk image at the partition's offset.
    writes_at_offset: bool = False
    block_sizes: tuple[int, ...] = (4096,)

    def check_block_size(self, block_size: int) -> None:
        if block_size not in self.block_sizes:
            raise UserError(f"--block-size {block_size} is not supported with {self.name}",
                            f"use --block-size {' or '.join(map(str, self.block_sizes))}")

    @abstractmethod
    def needed_bytes(self, stats: TreeStats) -> int:
        """Bytes the filesystem needs to hold the tree, metadata included."""

    @abstractmethod
    def make(self, request: FsRequest, runner: Runner) -> None: ...

    @abstractmethod
    def open_view(self, source: FsSource, runner: Runner) -> GuestView:
        """The guest tree in an existing filesystem, read without mounting it."""


def has_empty_machine_id(tree: Path) -> bool:
    path = GuestRoot(tree).resolve(MACHINE_ID, follow_final=False)
    return path.is_file() and not path.is_symlink() and path.stat().st_size == 0
