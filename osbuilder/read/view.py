"""A guest's tree inside an artifact, read-only, by guest path, without mounting it.

Each format gives a GuestView (a directory, an initrd's archive, an ext4 or xfs image read
with their tools, an ISO through pycdlib); symlinks are resolved inside the guest the same
way for all of them, so `/sbin/init -> /lib/systemd/systemd` means the guest's systemd.
"""

from __future__ import annotations

import os
import stat
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from osbuilder.foundation.errors import InternalError, UserError
from osbuilder.foundation.fsutil import remove_tree, resolve_in_guest
from osbuilder.read.newc import NewcReader


@dataclass(frozen=True)
class Node:
    kind: str  # "file", "dir", "symlink" or "other"
    mode: int  # permission bits
    size: int


def node_of(st_mode: int, size: int) -> Node:
    kind = ("file" if stat.S_ISREG(st_mode) else "dir" if stat.S_ISDIR(st_mode)
            else "symlink" if stat.S_ISLNK(st_mode) else "other")
    return Node(kind, stat.S_IMODE(st_mode), size)


class GuestView(ABC):
    """Implementations answer for canonical paths (no symlink among the parents); the public
    methods resolve a guest path to that form first."""

    where: str = "the artifact"

    @abstractmethod
    def _lstat(self, path: str) -> Node | None:
        """The entry at `path` (its final link not followed), or None."""

    @abstractmethod
    def _readlink(self, path: str) -> str: ...

    @abstractmethod
    def _listdir(self, path: str) -> list[str]: ...

    @abstractmethod
    def _read(self, path: str) -> bytes:
        """The content of the regular file at `path`."""

    def close(self) -> None:
        """Release scratch files."""

    def used_bytes(self) -> int | None:
        """Bytes the filesystem has in use, where its tools say (None: unknown)."""
        return None

    def __enter__(self) -> "GuestView":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _is_symlink(self, path: str) -> bool:
        node = self._lstat(path)
        return node is not None and node.kind == "symlink"

    def resolve(self, path: str, follow_final: bool = True) -> str:
        return resolve_in_guest(path, self._is_symlink, self._readlink, follow_final=follow_final, where=self.where)

    def lstat(self, path: str) -> Node | None:
        return self._lstat(self.resolve(path, follow_final=False))

    def stat(self, path: str) -> Node | None:
        return self._lstat(self.resolve(path))

    def readlink(self, path: str) -> str:
        return self._readlink(self.resolve(path, follow_final=False))

    def listdir(self, path: str) -> list[str]:
        resolved = self.resolve(path)
        node = self._lstat(resolved)
        return self._listdir(resolved) if node is not None and node.kind == "dir" else []

    # No file a reader needs (an agent, a launcher, a unit, the summary) comes near this; a
    # larger size is what a damaged or hostile image claims, refused before it is read.
    READ_LIMIT = 512 << 20

    def read_file(self, path: str, limit: int | None = None) -> bytes | None:
        """A regular file's bytes through symlinks, or None when there is none; one larger
        than `limit` (READ_LIMIT by default) is refused before a byte of it is read."""
        resolved = self.resolve(path)
        node = self._lstat(resolved)
        if node is None or node.kind != "file":
            return None
        limit = self.READ_LIMIT if limit is None else limit
        if node.size > limit:
            raise UserError(f"'{self.where}': {path} claims {node.size} bytes, past the reader's limit of "
                            f"{limit >> 20} MiB", "check the artifact: a real one holds no such file")
        return self._read(resolved)


class DirView(GuestView):
    """A tree in a host directory (a rootfs, or an artifact extracted to scratch space)."""

    def __init__(self, root: Path, scratch: Path | None = None) -> None:
        self.root = Path(root)
        self.where = str(root)
        self.scratch = scratch  # removed on close

    def _host(self, path: str) -> Path:
        return self.root.joinpath(path.lstrip("/"))

    def _lstat(self, path: str) -> Node | None:
        try:
            st = os.lstat(self._host(path))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return node_of(st.st_mode, st.st_size)

    def _readlink(self, path: str) -> str:
        return os.readlink(self._host(path))

    def _listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(self._host(path)))

    def _read(self, path: str) -> bytes:
        return self._host(path).read_bytes()

    def close(self) -> None:
        if self.scratch is not None:
            remove_tree(self.scratch)


class NewcView(GuestView):
    """A newc archive, indexed in one pass; members are read where they lie. A file is read
    in place; a stream (a decompressor's output) is read once, and the data of the members
    a view may need is kept in `store`: each up to MEMBER_KEEP_LIMIT bytes, all together up
    to STORE_LIMIT, so a small compressed initrd cannot fill the disk with what it unpacks to."""

    MEMBER_KEEP_LIMIT = 256 << 20  # larger members are listed, and refused if read
    STORE_LIMIT = 2 << 30

    def __init__(self, archive: Path, source: str, scratch: Path | None = None,
                 stream: BinaryIO | None = None, wanted: frozenset[str] | None = None) -> None:
        self.archive = archive
        self.where = source
        self.scratch = scratch
        self.wanted = wanted if stream is not None else None
        # mode, offset (None: too large to keep, or not wanted), size
        self.entries: dict[str, tuple[int, int | None, int]] = {"/": (stat.S_IFDIR | 0o755, 0, 0)}
        if stream is None:
            with open(archive, "rb") as f:
                for member in NewcReader(f, source).members():
                    self.entries[self._name(member.name)] = (member.mode, f.tell(), member.size)
            return
        reader = NewcReader(stream, source)
        kept = 0
        with open(archive, "wb") as store:
            for member in reader.members():
                offset = None
                name = self._name(member.name)
                needed = wanted is None or name in wanted or not stat.S_ISREG(member.mode)  # links resolve paths
                if needed and member.size <= self.MEMBER_KEEP_LIMIT and not stat.S_ISDIR(member.mode):
                    kept += member.size
                    if kept > self.STORE_LIMIT:
                        raise UserError(f"'{source}' unpacks to more than {self.STORE_LIMIT >> 30} GiB of files",
                                        "pass an initrd of a usual size (the reader's limit)")
                    offset = store.tell()
                    store.write(reader.read_data(member))
                self.entries[name] = (member.mode, offset, member.size)

    @staticmethod
    def _name(member_name: bytes) -> str:
        raw = member_name.decode(errors="surrogateescape")
        raw = raw[2:] if raw.startswith("./") else "" if raw == "." else raw
        return "/" + raw.strip("/")

    def _data(self, f: BinaryIO, path: str) -> bytes:
        mode, offset, size = self.entries[path]
        if offset is None and self.wanted is not None and path not in self.wanted and size <= self.MEMBER_KEEP_LIMIT:
            raise InternalError(f"{path} was read from a view opened for {sorted(self.wanted)} only")
        if offset is None:
            raise UserError(f"'{self.where}': {path} is {size} bytes, past the reader's limit of "
                            f"{self.MEMBER_KEEP_LIMIT >> 20} MiB", "pass an initrd whose files are of a usual size")
        f.seek(offset)
        return f.read(size)

    def _lstat(self, path: str) -> Node | None:
        entry = self.entries.get(path.rstrip("/") or "/")
        if entry is None:
            # Archives may leave parent directories implicit.
            prefix = path.rstrip("/") + "/"
            return Node("dir", 0o755, 0) if any(name.startswith(prefix) for name in self.entries) else None
        return node_of(entry[0], entry[2])

    def _readlink(self, path: str) -> str:
        with open(self.archive, "rb") as f:
            return self._data(f, path).decode(errors="surrogateescape")

    def _listdir(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return sorted({name[len(prefix):].split("/")[0] for name in self.entries
                       if name.startswith(prefix) and name != prefix})

    def _read(self, path: str) -> bytes:
        with open(self.archive, "rb") as f:
            return self._data(f, path)

    def close(self) -> None:
        if self.scratch is not None:
            self.scratch.unlink(missing_ok=True)
