"""The interface every packer implements (see registry.py): how it packs and reads back its
format, and every fact the rest of osbuilder needs about that format: Kata's release names,
the runtime-configuration slot it fills and the settings that slot must carry, and how
`boot` attaches it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, ClassVar

from osbuilder.foundation.errors import UserError
from osbuilder.pack.artifact import Artifact, ArtifactInfo
from osbuilder.pack.gzip_pieces import PieceStore
from osbuilder.pack.guest_tree import GuestTree
from osbuilder.read.view import GuestView
from osbuilder.foundation.runner import Runner
from osbuilder.foundation.tools import HostTools


@dataclass(frozen=True)
class PackContext:
    runner: Runner
    tools: HostTools
    workdir: Path  # scratch space on the output's filesystem, removed afterwards
    pieces: PieceStore | None = None  # compressed initrd pieces kept by the build cache


# Packer.boots_as: qemu loads the artifact as the initrd, or attaches it as a disk behind the boot shim.
BOOTS_AS_INITRD = "initrd"
BOOTS_AS_DISK = "disk"


@dataclass(frozen=True)
class ReleaseNames:
    """Kata's names for a format's artifacts in a release (docs/kata-contract.md, release packaging)."""

    suffix: str  # the versioned file: kata-<distro>-<release>[-<variant>].<suffix>
    # The link the runtime's configuration names ("kata-containers{variant}.img"); None: the
    # format gets no link, and so no release tarball either.
    link: str | None = None
    tarball: str | None = None  # kata-static-rootfs-<tarball>[-<variant>].tar.<zst|xz>

    def file_name(self, distro: str, release: str, variant: str | None) -> str:
        return f"kata-{distro}-{release}{_tail(variant)}.{self.suffix}"

    def link_name(self, variant: str | None) -> str | None:
        return self.link.format(variant=_tail(variant)) if self.link else None

    def tarball_stem(self, variant: str | None) -> str | None:
        return f"kata-static-rootfs-{self.tarball}{_tail(variant)}" if self.link and self.tarball else None


def _tail(variant: str | None) -> str:
    return f"-{variant}" if variant else ""


@dataclass(frozen=True)
class RuntimeSlot:
    """The key of a `[hypervisor.<name>]` table that names an artifact of this format."""

    key: str  # "image" or "initrd", Kata's names
    preference: int  # the lowest wins when a build made several (Kata boots the image by default)


def _equal(expected: object) -> Callable[[object], bool]:
    return lambda given: given == expected


@dataclass(frozen=True)
class RuntimeSetting:
    """One setting Kata's configuration must carry for an artifact: the runtime fragment writes
    it, and `check` reports a configuration that disagrees."""

    key: str
    value: str | bool | None  # None: the artifact alone cannot tell (a missing sidecar)
    default: object  # Kata's value when the configuration leaves the key out
    comment: str  # the fragment's line above the setting
    code: str  # check's finding when the configuration disagrees, with its severity and words
    severity: str
    problem: str
    fix: str
    accepts: Callable[[object], bool] | None = None  # how a configured value satisfies it (default: equal)

    def satisfied_by(self, given: object) -> bool:
        if self.value is None:
            return False
        return (self.accepts or _equal(self.value))(given)


class Packer(ABC):
    name: ClassVar[str]
    help: ClassVar[str]
    default_file_name: ClassVar[str]
    noun: ClassVar[str]  # what its artifacts are called in a sentence ("a disk image")
    Options: ClassVar[type]  # a frozen dataclass of settings
    release: ClassVar[ReleaseNames]
    runtime_slot: ClassVar[RuntimeSlot | None] = None  # None: Kata's runtime boots no such artifact
    boots_as: ClassVar[str]  # BOOTS_AS_INITRD or BOOTS_AS_DISK

    def validate(self, options: Any) -> None:
        """Refuse bad options before any work starts."""

    def with_release_defaults(self, options: Any, variant: str | None) -> Any:
        """The options with what a release variant implies for this format filled in."""
        return options

    def as_extension(self, options: Any, label: str) -> Any:
        """The options for an extension image labelled `label`, or a UserError when this
        format cannot be one (the runtime attaches extensions as disks)."""
        raise UserError(f"an extension image is an erofs disk image that the runtime attaches as a disk, not "
                        f"{self.noun}", "pack it as a disk image (osbuilder image, or build --format image)")

    @abstractmethod
    def pack(self, tree: GuestTree, out: Path, options: Any, context: PackContext) -> Artifact:
        """Write the artifact to `out` (a path the caller stages); the tree is only read."""

    def describe(self, artifact: Artifact) -> str:
        """The words after the size in the one-line report."""
        return ""

    @abstractmethod
    def recognise(self, path: Path, f: BinaryIO, size: int) -> ArtifactInfo | None:
        """What `path` is, when its bytes are this packer's format (f is open at its start)."""

    @abstractmethod
    def open_view(self, artifact: ArtifactInfo, workdir: Path, runner: Runner) -> GuestView:
        """The guest tree inside the artifact, read without mounting it."""

    def open_partial_view(self, artifact: ArtifactInfo, workdir: Path, runner: Runner,
                          wanted: frozenset[str]) -> GuestView:
        """A view from which only the guest paths `wanted` will be read (the summary, for
        boot): a packer whose format must be streamed keeps only those; others open it all."""
        return self.open_view(artifact, workdir, runner)

    def describe_info(self, artifact: ArtifactInfo) -> str:
        """A few words on what was read back, for the runtime fragment's header."""
        return self.name

    def runtime_settings(self, artifact: ArtifactInfo) -> list[RuntimeSetting]:
        """The settings besides the slot that the runtime's configuration must carry."""
        return []

    def boot_modules(self, artifact: ArtifactInfo) -> tuple[str, ...]:
        """The kernel modules (by name) a disk boot needs to mount its root, besides the device's."""
        return ()

    def layout_facts(self, artifact: ArtifactInfo, view: GuestView) -> dict[str, Any]:
        """What `inspect` reports of the artifact's layout, beyond its format."""
        return {"filesystem": {"type": artifact.fs, "size": artifact.size}} if artifact.fs else {}
