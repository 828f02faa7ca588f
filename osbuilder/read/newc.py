"""The one newc (cpio "070701") reader: members in order, their data read or skipped.

Every header is checked before it is used: eight hexadecimal digits per field (no sign, no
space, so no field is ever negative), a name of at most NAME_LIMIT bytes ending in its NUL.
Each member moves the reader forward, so a hostile archive ends or fails; it never loops.
The stream may be seekable (a file) or not (a decompressor's pipe): data is skipped by
seeking where it can be and by reading otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from osbuilder.foundation.errors import UserError

HEADER_SIZE = 110
MAGIC = b"070701"
TRAILER = b"TRAILER!!!"
FIELDS = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize", "devmajor", "devminor",
          "rdevmajor", "rdevminor", "namesize", "check")
HEX_FIELDS = re.compile(rb"[0-9A-Fa-f]{104}")
NAME_LIMIT = 4096  # PATH_MAX: the kernel's own unpacker refuses longer names
SKIP_CHUNK = 1 << 20


@dataclass(frozen=True)
class NewcMember:
    name: bytes
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    size: int
    ino: int = 0
    rdevmajor: int = 0
    rdevminor: int = 0


class NewcReader:
    """Walks a newc archive. A stream that is not newc, or ends early, is the user's input
    to fix: a UserError naming `source`."""

    def __init__(self, stream: BinaryIO, source: str) -> None:
        self.stream = stream
        self.source = source
        self.position = 0  # bytes of the archive consumed, for streams that cannot tell
        self.seekable = stream.seekable()

    def _bad(self, why: str) -> UserError:
        return UserError(f"'{self.source}' is not a valid newc archive ({why})",
                         "pass an initrd that osbuilder or cpio -H newc wrote")

    def _read_exactly(self, count: int, what: str) -> bytes:
        data = self.stream.read(count)
        if len(data) < count:
            raise self._bad(f"it ends inside {what}")
        self.position += count
        return data

    def skip(self, count: int) -> None:
        """Move past `count` bytes of data (the rest of a member the caller did not read)."""
        if count <= 0:
            return
        if self.seekable:
            here = self.stream.tell()
            end = self.stream.seek(0, 2)
            if here + count > end:
                raise self._bad("it ends inside a member's data")
            self.stream.seek(here + count)
            self.position += count
            return
        while count:
            chunk = self.stream.read(min(count, SKIP_CHUNK))
            if not chunk:
                raise self._bad("it ends inside a member's data")
            count -= len(chunk)
            self.position += len(chunk)

    def members(self) -> Iterator[NewcMember]:
        """Each member; the stream stands at its data when it is yielded, and whatever of the
        data the caller leaves unread is skipped (on a pipe, read it with read_data)."""
        while True:
            header = self.stream.read(HEADER_SIZE)
            if len(header) < HEADER_SIZE:
                raise self._bad("it ends before its trailer")
            self.position += HEADER_SIZE
            if header[:6] != MAGIC:
                raise self._bad(f"bad magic {header[:6]!r}")
            if not HEX_FIELDS.fullmatch(header[6:]):
                raise self._bad("a header field is not eight hexadecimal digits")
            values = {k: int(header[6 + 8 * i: 14 + 8 * i], 16) for i, k in enumerate(FIELDS)}
            namesize = values["namesize"]
            if not 1 < namesize <= NAME_LIMIT + 1:
                raise self._bad(f"a name of {namesize} bytes (the limit is {NAME_LIMIT})")
            raw = self._read_exactly(namesize, "a name")
            if raw[-1:] != b"\0":
                raise self._bad("a name does not end in NUL")
            name = raw[:-1]
            self.skip(-(HEADER_SIZE + namesize) % 4)
            if name == TRAILER:
                return
            size = values["filesize"]
            start = self.stream.tell() if self.seekable else self.position
            yield NewcMember(name, values["mode"], values["uid"], values["gid"], values["nlink"], values["mtime"],
                             size, values["ino"], values["rdevmajor"], values["rdevminor"])
            # A pipe's caller reads through read_data, which counts; a file's position says.
            consumed = self.stream.tell() - start if self.seekable else self.position - start
            self.skip(size - consumed + (-size % 4))

    def read_data(self, member: NewcMember, limit: int | None = None) -> bytes:
        """The data of the member just yielded, whole (at most `limit` bytes, or refused)."""
        if limit is not None and member.size > limit:
            raise UserError(f"'{self.source}': member {member.name.decode(errors='replace')} is {member.size} bytes, "
                            f"past the reader's limit of {limit}", "pass an initrd whose members are of a usual size")
        data = self.stream.read(member.size)
        if len(data) < member.size:
            raise self._bad(f"member {member.name.decode(errors='replace')} is cut short")
        if not self.seekable:
            self.position += len(data)
        return data

    def read(self, wanted: str) -> bytes | None:
        """The data of the member named `wanted` (no leading slash), or None."""
        target = wanted.lstrip("/").encode()
        for member in self.members():
            if member.name == target:
                return self.read_data(member)
        return None
