"""Artifacts: one a packer wrote (its path, size, details and, once asked for, its digest),
and one read back (what its bytes say it is: ArtifactInfo)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osbuilder.foundation.fsutil import sha256_file


# ArtifactInfo.kind of a directory: a guest tree no packer wrote.
ROOTFS_KIND = "rootfs"


@dataclass(frozen=True)
class PackDetails:
    """What a packer records of an artifact it wrote, besides its path and size; each packer
    extends it with the fields of its format."""

    init_mode: str

    def as_json(self) -> dict[str, object]:
        return {key: value for key, value in dataclasses.asdict(self).items() if value is not None}


@dataclass(frozen=True)
class Artifact:
    path: Path
    format: str
    size: int
    details: PackDetails
    # Filled in by digested(): hashing a 256 MiB image costs about 0.3 s here, which only
    # a manifest needs, so the packers themselves don't pay it.
    sha256: str = ""
    # Files written beside the artifact: name -> content (e.g. root_hash.txt for verity).
    sidecars: dict[str, str] = dataclasses.field(default_factory=dict)

    def digested(self) -> Artifact:
        return self if self.sha256 else dataclasses.replace(self, sha256=sha256_file(self.path))

    def manifest_entry(self) -> dict[str, object]:
        assert self.sha256, "manifest entries are made from digested artifacts"
        return {"file": self.path.name, "format": self.format, "size": self.size, "sha256": self.sha256,
                **self.details.as_json()}

    def as_json(self) -> dict[str, object]:
        data: dict[str, object] = {"path": str(self.path), "format": self.format, "size": self.size}
        if self.sha256:
            data["sha256"] = self.sha256
        data.update(self.details.as_json())
        if self.sidecars:
            data["sidecars"] = sorted(self.sidecars)
        return data


@dataclass(frozen=True)
class ArtifactInfo:
    """An existing artifact, recognised from its bytes by the packer of its format."""

    path: Path
    kind: str  # the packer's name, or ROOTFS_KIND for a directory
    size: int
    fs: str | None = None
    root_partition: int | None = None  # 1-based; None: the whole device is the root
    partitions: tuple[tuple[int, int], ...] = ()  # (offset, length) in bytes, MBR #1's entries
    dax: bool = False
    codec: Any = None  # an initrd's compression (pack.compress.Codec)

    @property
    def verity(self) -> bool:
        """A data partition followed by its dm-verity hash partition."""
        return len(self.partitions) >= 2
