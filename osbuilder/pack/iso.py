"""The ISO packer: ISO 9660 + Rock Ridge, for read-only root delivery; and reading one back."""

from __future__ import annotations

import io
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

    def read_file(self, artifact: ArtifactInfo, guest_path: str, workdir: Path, runner: Runner) -> bytes | None:
        iso = pycdlib.PyCdlib()
        try:
            iso.open(str(artifact.path))
        except PyCdlibException as exc:
            raise UserError(f"'{artifact.path}' is not a readable ISO ({exc})", "rebuild it with osbuilder iso") from None
        try:
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=guest_path)
            return out.getvalue()
        except PyCdlibException:
            return None
        finally:
            iso.close()
