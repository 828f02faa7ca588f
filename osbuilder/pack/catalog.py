"""Every packer's name, module and one-line help: the front end lists the packer commands
(`osbuilder --help`, the `build` help) from here without importing a packer, and the registry
(registry.py) imports each packer from here. A new format is one packer module plus its line
here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PackerEntry:
    module: str
    cls: str
    help: str


PACKER_CATALOG: dict[str, PackerEntry] = {
    "initrd": PackerEntry("osbuilder.pack.initrd", "InitrdPacker", "pack a rootfs into an initrd (cpio newc, compressed)"),
    "image": PackerEntry("osbuilder.pack.image", "ImagePacker",
                         "pack a rootfs into a disk image (ext4, xfs or erofs, with the NVDIMM/DAX header)"),
    "iso": PackerEntry("osbuilder.pack.iso", "IsoPacker", "pack a rootfs into an ISO 9660 image"),
}
