"""Filesystems for disk images: one module each behind the interface in base.py, and the
registry the image packer, the artifact reader and the boot shim take them from."""

from __future__ import annotations

from osbuilder.foundation.errors import lookup
from osbuilder.pack.fs.base import Filesystem, FsRequest, FsSource
from osbuilder.pack.fs.erofs import Erofs
from osbuilder.pack.fs.ext4 import Ext4
from osbuilder.pack.fs.xfs import Xfs

FILESYSTEMS: dict[str, Filesystem] = {fs.name: fs for fs in (Ext4(), Erofs(), Xfs())}


def get_filesystem(name: str) -> Filesystem:
    return lookup(FILESYSTEMS, name, "filesystem")


__all__ = ["FILESYSTEMS", "Filesystem", "FsRequest", "FsSource", "get_filesystem"]
