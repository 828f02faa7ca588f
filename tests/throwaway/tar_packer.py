"""A throwaway packer: the guest tree as a plain tar. It fills Kata's image slot with a
setting of its own, so build, --layout kata, the fragment, inspect and check all have to
ask it rather than know it."""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from osbuilder.pack.artifact import Artifact, ArtifactInfo, PackDetails
from osbuilder.pack.base import BOOTS_AS_DISK, Packer, PackContext, ReleaseNames, RuntimeSetting, RuntimeSlot
from osbuilder.pack.guest_tree import GuestTree
from osbuilder.pack.catalog import PACKER_CATALOG, PackerEntry
from osbuilder.pack.registry import PACKERS
from osbuilder.read.view import GuestView, Node
from osbuilder.foundation.runner import Runner

TAR_ROOTFS_TYPE = "guesttar-fs"


@dataclass(frozen=True)
class GuestTarOptions:
    """No settings."""


@dataclass(frozen=True)
class GuestTarDetails(PackDetails):
    members: int


class TarView(GuestView):
    def __init__(self, path: Path) -> None:
        self.where = str(path)
        self.archive = tarfile.open(path)
        self.members = {"/" + m.name.removeprefix("./").strip("/") if m.name not in (".", "./") else "/": m
                        for m in self.archive.getmembers()}

    def _lstat(self, path: str) -> Node | None:
        member = self.members.get(path.rstrip("/") or "/")
        if member is None:
            return None
        kind = "dir" if member.isdir() else "symlink" if member.issym() else "file" if member.isfile() or member.islnk() \
            else "other"
        return Node(kind, member.mode & 0o7777, member.size)

    def _readlink(self, path: str) -> str:
        return self.members[path].linkname

    def _listdir(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return sorted({name[len(prefix):].split("/")[0] for name in self.members if name.startswith(prefix)
                       and name != prefix})

    def _read(self, path: str) -> bytes:
        extracted = self.archive.extractfile(self.members[path])
        assert extracted is not None
        return extracted.read()

    def close(self) -> None:
        self.archive.close()


class GuestTarPacker(Packer):
    name = "guesttar"
    help = "pack a rootfs into a plain tar (a test's throwaway format)"
    default_file_name = "guest.tar"
    noun = "a guest tarball"
    Options = GuestTarOptions
    release = ReleaseNames(suffix="tar", link="kata-containers-tar{variant}.img", tarball="tar")
    runtime_slot = RuntimeSlot(key="image", preference=5)
    boots_as = BOOTS_AS_DISK

    def pack(self, tree: GuestTree, out: Path, options: GuestTarOptions, context: PackContext) -> Artifact:
        count = 0

        def stamped(info: tarfile.TarInfo) -> tarfile.TarInfo:
            info.mtime = tree.epoch
            return info

        with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as archive:
            archive.add(tree.root, arcname=".", recursive=False, filter=stamped)
            for directory, dirs, files in os.walk(tree.root):
                dirs.sort()
                for name in sorted(dirs + files):
                    path = Path(directory) / name
                    archive.add(path, arcname=str(path.relative_to(tree.root)), recursive=False, filter=stamped)
                    count += 1
        return Artifact(out, self.name, out.stat().st_size, GuestTarDetails(init_mode=tree.init_mode, members=count))

    def describe(self, artifact: Artifact) -> str:
        return "plain tar"

    def recognise(self, path: Path, f: BinaryIO, size: int) -> ArtifactInfo | None:
        f.seek(257)
        return ArtifactInfo(path, self.name, size, fs=TAR_ROOTFS_TYPE) if f.read(5) == b"ustar" else None

    def open_view(self, artifact: ArtifactInfo, workdir: Path, runner: Runner) -> GuestView:
        return TarView(artifact.path)

    def runtime_settings(self, artifact: ArtifactInfo) -> list[RuntimeSetting]:
        return [RuntimeSetting("rootfs_type", TAR_ROOTFS_TYPE, "ext4", "The throwaway format's filesystem type.",
                               "guesttar-rootfs-type", "error", f"rootfs_type is not {TAR_ROOTFS_TYPE}",
                               f'set rootfs_type = "{TAR_ROOTFS_TYPE}"')]


# Registered as a format of osbuilder's own is: its catalog line (the subcommand, listed without
# importing the packer) and the packer in the registry built from the catalog.
PACKER_CATALOG[GuestTarPacker.name] = PackerEntry(__name__, GuestTarPacker.__name__, GuestTarPacker.help)
PACKERS[GuestTarPacker.name] = GuestTarPacker()
