"""The ISO packer: ISO 9660 + Rock Ridge, for read-only root delivery; and reading one back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from osbuilder.pack.catalog import PACKER_CATALOG
from osbuilder.pack.artifact import Artifact, ArtifactInfo, PackDetails
from osbuilder.pack.base import BOOTS_AS_DISK, Packer, PackContext, ReleaseNames
from osbuilder.pack.guest_tree import GuestTree
from osbuilder.read.view import GuestView
from osbuilder.foundation.runner import Runner

# The primary volume descriptor's standard identifier.
ISO_MAGIC_OFFSET = 0x8001
ISO_MAGIC = b"CD001"
ISO_FS = "iso9660"  # the kernel's name for the filesystem (rootfstype=)
ISO_MODULES = ("isofs",)


@dataclass(frozen=True)
class IsoOptions:
    """The ISO has no options of its own."""


@dataclass(frozen=True)
class IsoDetails(PackDetails):
    directories: int
    files: int
    symlinks: int
    hardlinks: int
    skipped_special: int  # device nodes and fifos, which pycdlib cannot write


class IsoPacker(Packer):
    name = "iso"
    help = PACKER_CATALOG[name].help
    default_file_name = "kata-containers.iso"
    noun = "an ISO"
    Options = IsoOptions
    # Kata ships no ISO: a versioned name in the release tree, no link, no tarball.
    release = ReleaseNames(suffix="iso")
    boots_as = BOOTS_AS_DISK

    def pack(self, tree: GuestTree, out: Path, options: IsoOptions, context: PackContext) -> Artifact:
        from osbuilder.pack.iso9660 import write_iso  # pycdlib is loaded only by the commands that need it

        counts = write_iso(tree.root, out, tree.epoch)
        return Artifact(path=out, format=self.name, size=out.stat().st_size,
                        details=IsoDetails(init_mode=tree.init_mode, **counts))

    def recognise(self, path: Path, f: BinaryIO, size: int) -> ArtifactInfo | None:
        f.seek(ISO_MAGIC_OFFSET)
        if f.read(len(ISO_MAGIC)) != ISO_MAGIC:
            return None
        return ArtifactInfo(path, self.name, size, fs=ISO_FS, root_partition=None)

    def boot_modules(self, artifact: ArtifactInfo) -> tuple[str, ...]:
        return ISO_MODULES

    def open_view(self, artifact: ArtifactInfo, workdir: Path, runner: Runner) -> GuestView:
        from osbuilder.pack.iso_view import IsoView

        return IsoView(artifact.path)
