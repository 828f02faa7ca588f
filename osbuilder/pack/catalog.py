"""Every packer's name, module and one-line help: the front end lists the packer commands
(`osbuilder --help`, the `build` help) from here without importing a packer, a packer command
loads its own packer alone, and the registry (registry.py) imports every packer from here. A
new format is one packer module plus its line here."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from osbuilder.pack.base import Packer


@dataclass(frozen=True)
class PackerEntry:
    module: str
    cls: str
    help: str

    def load(self) -> Packer:
        """The packer, its module imported now (a packer command imports no other packer)."""
        return getattr(importlib.import_module(self.module), self.cls)()


PACKER_CATALOG: dict[str, PackerEntry] = {
    "initrd": PackerEntry("osbuilder.pack.initrd", "InitrdPacker", "pack a rootfs into an initrd (cpio newc, compressed)"),
    "image": PackerEntry("osbuilder.pack.image", "ImagePacker",
                         "pack a rootfs into a disk image (ext4, xfs or erofs, with the NVDIMM/DAX header)"),
    "iso": PackerEntry("osbuilder.pack.iso", "IsoPacker", "pack a rootfs into an ISO 9660 image"),
}
