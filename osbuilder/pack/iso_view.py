"""Reading an ISO back (inspect, check, boot): its Rock Ridge tree through pycdlib."""

from __future__ import annotations

import io
import stat
import struct
from pathlib import Path
from typing import Any, Callable

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from osbuilder.foundation.errors import UserError
from osbuilder.read.view import GuestView, Node


# What pycdlib lets escape from damaged bytes besides its own errors (a cut structure, a
# bad offset, an undecodable name): each means the ISO is damaged, not that osbuilder failed.
DAMAGED = (PyCdlibException, struct.error, IndexError, KeyError, ValueError, UnicodeError, AttributeError,
           TypeError, OverflowError)


class IsoView(GuestView):
    """An ISO's Rock Ridge tree through pycdlib."""

    def __init__(self, path: Path) -> None:
        self.where = str(path)
        self.iso = pycdlib.PyCdlib()
        self._guard(lambda: self.iso.open(str(path)))

    def _guard(self, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except DAMAGED as exc:
            raise UserError(f"'{self.where}' is not a readable ISO ({type(exc).__name__}: {exc})",
                            "rebuild it with osbuilder iso") from None

    def _record(self, path: str):
        try:
            return self.iso.get_record(rr_path=path or "/")
        except PyCdlibException:
            return None
        except DAMAGED as exc:
            raise UserError(f"'{self.where}' is not a readable ISO ({type(exc).__name__}: {exc})",
                            "rebuild it with osbuilder iso") from None

    def _lstat(self, path: str) -> Node | None:
        record = self._record(path)
        if record is None:
            return None
        if record.rock_ridge is not None and record.rock_ridge.is_symlink():
            return Node("symlink", 0o777, 0)
        mode = record.rock_ridge.get_file_mode() if record.rock_ridge is not None else 0o644
        return Node("dir" if record.is_dir() else "file", stat.S_IMODE(mode), record.get_data_length())

    def _readlink(self, path: str) -> str:
        target = self._record(path).rock_ridge.symlink_path()
        return target.decode(errors="surrogateescape") if isinstance(target, bytes) else target

    def _listdir(self, path: str) -> list[str]:
        names = []
        for child in self._guard(lambda: list(self.iso.list_children(rr_path=path or "/"))):
            if child is None or child.is_dot() or child.is_dotdot():
                continue
            name = child.rock_ridge.name() if child.rock_ridge is not None else child.file_identifier()
            names.append(name.decode(errors="surrogateescape") if isinstance(name, bytes) else name)
        return sorted(names)

    def _read(self, path: str) -> bytes:
        out = io.BytesIO()
        self._guard(lambda: self.iso.get_file_from_iso_fp(out, rr_path=path))
        return out.getvalue()

    def close(self) -> None:
        self.iso.close()
