"""What a packer command (initrd, image, iso) is given besides its packer's options: the tree
and the output. Kept apart from config.py, which holds the whole pipeline's settings, so a
packer command imports its own packer and nothing of the rootfs stage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from osbuilder.foundation.settings import as_path, setting
from osbuilder.foundation.shared_settings import ArchSetting, BaseSetting, CacheDirSetting, OutputSetting
from osbuilder.pack.catalog import PACKER_CATALOG
from osbuilder.rootfs.initmode import InitSetting

EXTENSION_SUFFIX = "extension"


def extension_variant(name: str) -> str:
    """Kata's variant and root-hash label for an extension image: <name>-extension."""
    return f"{name}-{EXTENSION_SUFFIX}"


def extension_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """What an extension image is unless told otherwise: an erofs disk image with dm-verity
    and no DAX header (Kata's extensions, docs/kata-contract.md, release packaging)."""
    defaults = {"formats": ("image",), "fs": "erofs", "verity": True, "dax": False}
    return {**defaults, **{k: v for k, v in values.items() if v is not None}}


@dataclass(frozen=True)
class OutputOptions(OutputSetting):
    required_settings: ClassVar[tuple[str, ...]] = ("output",)
    force: bool = setting(False, help="replace an existing output", boolean=True)


@dataclass(frozen=True)
class PackSource(InitSetting, ArchSetting, BaseSetting, CacheDirSetting):
    """What a packer of an existing tree is given; the cache holds the record of trees already
    checked (foundation/verified.py)."""

    rootfs: Path = setting(help="guest tree written by osbuilder rootfs", positional=True, metavar="ROOTFS",
                           parse=as_path, required=True)


def pack_settings(name: str) -> tuple[type, ...]:
    """The option classes of the packer command `name`."""
    return PackSource, PACKER_CATALOG[name].load().Options, OutputOptions
