"""The ISO packer: ISO 9660 + Rock Ridge, for read-only root delivery; and reading one back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from osbuilder.pack.artifact import Artifact, ArtifactInfo
from osbuilder.pack.base import Packer, PackContext
from osbuilder.pack.guest_tree import GuestTree
from osbuilder.read.view import GuestView
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
        from osbuilder.pack.iso9660 import write_iso  # pycdlib is loaded only by the commands that need it

        counts = write_iso(tree.root, out, tree.epoch)
        return Artifact(path=out, format=self.name, size=out.stat().st_size,
                        details={"init_mode": tree.init_mode, **counts})

    def recognise(self, path: Path, f: BinaryIO, size: int) -> ArtifactInfo | None:
        f.seek(ISO_MAGIC_OFFSET)
        if f.read(len(ISO_MAGIC)) != ISO_MAGIC:
            return None
        return ArtifactInfo(path, self.name, size, boots_as="disk", fs="iso9660", root_partition=None)

    def open_view(self, artifact: ArtifactInfo, workdir: Path, runner: Runner) -> GuestView:
        from osbuilder.pack.iso_view import IsoView

        return IsoView(artifact.path)
