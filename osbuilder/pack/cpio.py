"""A streaming, reproducible writer for the cpio "newc" format (the initramfs format).

In the spirit of the standard library's tarfile: `NewcWriter` takes entries in order and
streams them to a file object; `archive_tree` walks a directory in sorted order and feeds
the writer. File data is copied in chunks, so memory does not grow with the tree.

Reproducibility: names are sorted byte-wise, inode numbers derive from the names (a
checksum, the next free number on a clash), mtimes are clamped to an epoch, and the
archive's own device numbers are zero. Nothing from the packing host (its inode numbers,
devices, clock or user) reaches the output. Numbers from names rather than positions
keep a file's entry the same when another file is added or removed, which is what lets a
rebuild reuse the compressed pieces around a change (gzip_pieces.py).
"""

from __future__ import annotations

import os
import stat
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from osbuilder.foundation.errors import BuildError
from osbuilder.foundation.fsutil import TreeListing

MAGIC = b"070701"
TRAILER = b"TRAILER!!!"
CHUNK = 1 << 20
MAX_FIELD = 0xFFFFFFFF


def _pad(length: int, alignment: int = 4) -> bytes:
    return b"\0" * (-length % alignment)


@dataclass(frozen=True)
class Entry:
    """One archive member. `source` is the host file whose bytes are the member's data."""

    name: bytes  # path inside the archive, no leading "/" or "./"
    mode: int  # file type and permission bits, as st_mode
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    nlink: int = 1
    rdev_major: int = 0
    rdev_minor: int = 0
    ino: int = 0
    size: int = 0
    link_target: bytes | None = None  # symlinks: the target, stored as the data
    source: Path | None = None  # regular files: where to read `size` bytes from
    link_group: tuple[int, int] | None = None  # host (st_dev, st_ino) of a hard-linked file

    @classmethod
    def symlink(cls, name: str, target: str, mtime: int = 0) -> "Entry":
        raw = target.encode()
        return cls(name=name.encode(), mode=stat.S_IFLNK | 0o777, mtime=mtime, size=len(raw), link_target=raw)


class NewcWriter:
    """Writes entries to `fileobj`; call close() (or use `with`) to add the trailer.
    `on_entry(name)`, where given, runs once each entry's bytes have reached `fileobj`."""

    BUFFER = 1 << 20

    def __init__(self, fileobj: BinaryIO, on_entry: Callable[[bytes], None] | None = None) -> None:
        self.fileobj = fileobj
        self.on_entry = on_entry
        self.offset = 0
        self.closed = False
        # Headers and padding are tiny; batching them keeps per-write overhead (a pipe
        # write or a zlib call) off the hot path.
        self._pending = bytearray()

    def _write(self, data: bytes) -> None:
        self._pending += data
        self.offset += len(data)
        if len(self._pending) >= self.BUFFER:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self.fileobj.write(self._pending)
            self._pending.clear()

    def _header(self, entry: Entry, namesize: int) -> bytes:
        fields = (entry.ino, entry.mode, entry.uid, entry.gid, entry.nlink, entry.mtime, entry.size,
                  0, 0, entry.rdev_major, entry.rdev_minor, namesize, 0)
        for value in fields:
            if not 0 <= value <= MAX_FIELD:
                raise BuildError(f"cannot store {entry.name.decode(errors='replace')!r} in a newc archive: "
                                 f"a field ({value}) exceeds 32 bits", "newc cannot hold files of 4 GiB or more")
        return MAGIC + b"".join(b"%08X" % value for value in fields)

    def add(self, entry: Entry) -> None:
        name = entry.name + b"\0"
        header = self._header(entry, len(name))
        self._write(header + name + _pad(len(header) + len(name)))
        if entry.link_target is not None:
            self._write(entry.link_target + _pad(len(entry.link_target)))
        elif entry.size:
            assert entry.source is not None
            self._copy(entry.source, entry.size, entry.name)
            self._write(_pad(entry.size))
        if self.on_entry is not None:
            self.flush()
            self.on_entry(entry.name)

    def _copy(self, source: Path, size: int, name: bytes) -> None:
        remaining = size
        with open(source, "rb") as f:
            while remaining:
                chunk = f.read(min(CHUNK, remaining))
                if not chunk:
                    break
                self._write(chunk)
                remaining -= len(chunk)
            if remaining or f.read(1):
                raise BuildError(f"{source} changed size while it was being archived", "do not modify the tree while packing")

    def close(self) -> None:
        if self.closed:
            return
        self.add(Entry(name=TRAILER, mode=0, nlink=1))
        # Pad to a whole 512-byte block, as GNU cpio does.
        self._write(_pad(self.offset, 512))
        self.flush()
        self.closed = True

    def __enter__(self) -> "NewcWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


def scan_tree(listing: TreeListing, epoch: int) -> Iterator[Entry]:
    """Every path under the listing's root (not root itself) as an Entry, unsorted, without
    inode numbers."""
    for name, item, st in listing.entries:
        entry = Entry(name=name, mode=st.st_mode, uid=st.st_uid, gid=st.st_gid, mtime=min(int(st.st_mtime), epoch),
                      nlink=1)
        if stat.S_ISLNK(st.st_mode):
            target = os.fsencode(os.readlink(item.path))
            entry = replace(entry, size=len(target), link_target=target)
        elif stat.S_ISREG(st.st_mode):
            entry = replace(entry, size=st.st_size, source=Path(item.path),
                            link_group=(st.st_dev, st.st_ino) if st.st_nlink > 1 else None)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            entry = replace(entry, rdev_major=os.major(st.st_rdev), rdev_minor=os.minor(st.st_rdev))
        elif not (stat.S_ISDIR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
            continue  # sockets cannot be archived meaningfully
        yield entry


def plan_archive(entries: list[Entry]) -> list[Entry]:
    """Sort entries and assign inode numbers (from their names) and hard-link counts.

    Hard-linked files share an inode number; their data is stored once, with the last
    member of the group (the GNU cpio convention, which the kernel's unpacker also reads).
    """
    ordered = sorted(entries, key=lambda e: e.name)
    groups: dict[tuple[int, int], list[int]] = {}
    for index, entry in enumerate(ordered):
        if entry.link_group:
            groups.setdefault(entry.link_group, []).append(index)
    planned: list[Entry] = []
    numbers: dict[tuple[int, int], int] = {}
    taken: set[int] = set()
    for index, entry in enumerate(ordered):
        if entry.link_group:
            members = groups[entry.link_group]
            if entry.link_group not in numbers:
                numbers[entry.link_group] = _inode_number(entry.name, taken)
            carries_data = index == members[-1]
            entry = replace(entry, ino=numbers[entry.link_group], nlink=len(members), link_group=None,
                            size=entry.size if carries_data else 0,
                            source=entry.source if carries_data else None)
        else:
            entry = replace(entry, ino=_inode_number(entry.name, taken),
                            nlink=2 if stat.S_ISDIR(entry.mode) else 1)
        planned.append(entry)
    return planned


def _inode_number(name: bytes, taken: set[int]) -> int:
    """A number from the name's checksum, never 0 (the trailer's) nor one already given."""
    number = zlib.crc32(name) or 1
    while number in taken:
        number = number % MAX_FIELD + 1
    taken.add(number)
    return number


def archive_tree(root: Path | TreeListing, out: BinaryIO, epoch: int, extra: list[Entry] | None = None,
                 on_entry: Callable[[bytes], None] | None = None) -> int:
    """Write `root` (a tree, or the listing of one already walked) plus `extra` entries
    (which replace tree paths of the same name) to `out`. Returns the number of entries written."""
    listing = root if isinstance(root, TreeListing) else TreeListing(root)
    overrides = {e.name: e for e in extra or []}
    entries = [e for e in scan_tree(listing, epoch) if e.name not in overrides] + list(overrides.values())
    planned = plan_archive(entries)
    with NewcWriter(out, on_entry) as writer:
        for entry in planned:
            writer.add(entry)
    return len(planned)
