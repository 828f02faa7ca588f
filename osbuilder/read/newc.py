"""The one newc (cpio "070701") reader: members in order, their data read or skipped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Iterator

from osbuilder.foundation.errors import UserError

HEADER_SIZE = 110
MAGIC = b"070701"
TRAILER = b"TRAILER!!!"
FIELDS = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize", "devmajor", "devminor",
          "rdevmajor", "rdevminor", "namesize", "check")


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
    """Walks a newc archive on a seekable stream. A stream that is not newc, or ends early,
    is the user's input to fix: a UserError naming `source`."""

    def __init__(self, stream: BinaryIO, source: str) -> None:
        self.stream = stream
        self.source = source

    def _bad(self, why: str) -> UserError:
        return UserError(f"'{self.source}' is not a valid newc archive ({why})",
                         "pass an initrd that osbuilder or cpio -H newc wrote")

    def members(self) -> Iterator[NewcMember]:
        """Each member; the stream stands at its data when it is yielded."""
        f = self.stream
        while True:
            header = f.read(HEADER_SIZE)
            if len(header) < HEADER_SIZE:
                raise self._bad("it ends before its trailer")
            if header[:6] != MAGIC:
                raise self._bad(f"bad magic {header[:6]!r}")
            try:
                values = {k: int(header[6 + 8 * i: 14 + 8 * i], 16) for i, k in enumerate(FIELDS)}
            except ValueError:
                raise self._bad("a header field is not hexadecimal") from None
            name = f.read(values["namesize"])[:-1]
            f.seek(-(HEADER_SIZE + values["namesize"]) % 4, 1)
            if name == TRAILER:
                return
            size = values["filesize"]
            start = f.tell()
            yield NewcMember(name, values["mode"], values["uid"], values["gid"], values["nlink"], values["mtime"],
                             size, values["ino"], values["rdevmajor"], values["rdevminor"])
            f.seek(start + size + (-size % 4))

    def read(self, wanted: str) -> bytes | None:
        """The data of the member named `wanted` (no leading slash), or None."""
        target = wanted.lstrip("/").encode()
        for member in self.members():
            if member.name == target:
                data = self.stream.read(member.size)
                if len(data) < member.size:
                    raise self._bad(f"member {wanted} is cut short")
                return data
        return None
