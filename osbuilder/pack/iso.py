"""The ISO packer: ISO 9660 + Rock Ridge, for read-only root delivery; and reading one back."""

from __future__ import annotations

import io
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from osbuilder.errors import UserError
from osbuilder.pack.artifact import Artifact, ArtifactInfo
from osbuilder.pack.base import Packer, PackContext
from osbuilder.pack.guest_tree import GuestTree
from osbuilder.pack.iso9660 import write_iso
from osbuilder.read.view import GuestView, Node
from osbuilder.runner import Runner

# The primary volume descriptor's standard identifier.
ISO_MAGIC_OFFSET = 0x8001
ISO_MAGIC = b"CD001"


@dataclass(frozen=True)
class IsoOptions:
    """The ISO has no options of its own."""


class IsoPacker(Packer):
    name = "iso"
    help = "pack a rootfs into an ISO 9660 image"
    default_file_name = "kata-containers.iso"
    noun = "an ISO"
    Options = IsoOptions

    def pack(self, tree: GuestTree, out: Path, options: IsoOptions, context: PackContext) -> Artifact:
        counts = write_iso(tree.root, out, tree.epoch)
        return Artifact(path=out, format=self.name, size=out.stat().st_size,
                        details={"init_mode": tree.init_mode, **counts})

    def recognise(self, path: Path, f: BinaryIO, size: int) -> ArtifactInfo | None:
        f.seek(ISO_MAGIC_OFFSET)
        if f.read(len(ISO_MAGIC)) != ISO_MAGIC:
            return None
        return ArtifactInfo(path, self.name, size, boots_as="disk", fs="iso9660", root_partition=None)

    def open_view(self, artifact: ArtifactInfo, workdir: Path, runner: Runner) -> GuestView:
        return IsoView(artifact.path)


class IsoView(GuestView):
    """An ISO's Rock Ridge tree through pycdlib."""

    def __init__(self, path: Path) -> None:
        self.where = str(path)
        self.iso = pycdlib.PyCdlib()
        try:
            self.iso.open(str(path))
        except PyCdlibException as exc:
            raise UserError(f"'{path}' is not a readable ISO ({exc})", "rebuild it with osbuilder iso") from None

    def _record(self, path: str):
        try:
            return self.iso.get_record(rr_path=path or "/")
        except PyCdlibException:
            return None

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
        for child in self.iso.list_children(rr_path=path or "/"):
            if child is None or child.is_dot() or child.is_dotdot():
                continue
            name = child.rock_ridge.name() if child.rock_ridge is not None else child.file_identifier()
            names.append(name.decode(errors="surrogateescape") if isinstance(name, bytes) else name)
        return sorted(names)

    def _read(self, path: str) -> bytes:
        out = io.BytesIO()
        self.iso.get_file_from_iso_fp(out, rr_path=path)
        return out.getvalue()

    def close(self) -> None:
        self.iso.close()
