"""What a boot is given: an initrd, a disk image (with or without the DAX header, with or
without a dm-verity partition) or an ISO, recognised from its bytes, not its name."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from osbuilder.errors import UserError
from osbuilder.pack.compress import codec_of
from osbuilder.pack.disk import PFN_OFFSET, SECTOR

PFN_SIGNATURE = b"NVDIMM_PFN_INFO\0"

# Filesystem superblock magics: (offset into the partition, bytes).
FS_MAGICS = (
    ("ext4", 1024 + 0x38, struct.pack("<H", 0xEF53)),
    ("erofs", 1024, struct.pack("<I", 0xE0F5E1E2)),
    ("xfs", 0, b"XFSB"),
)


@dataclass(frozen=True)
class BootArtifact:
    path: Path
    kind: str  # "initrd", "disk" or "iso"
    size: int
    dax: bool = False
    fs: str | None = None
    partitions: tuple[tuple[int, int], ...] = ()  # (offset, length) in bytes, MBR #1's entries

    @property
    def verity(self) -> bool:
        return self.kind == "disk" and len(self.partitions) >= 2


def _partitions(head: bytes) -> tuple[tuple[int, int], ...]:
    entries = []
    for i in range(4):
        entry = head[446 + 16 * i: 446 + 16 * (i + 1)]
        kind = entry[4]
        start, count = struct.unpack_from("<II", entry, 8)
        if kind and count:
            entries.append((start * SECTOR, count * SECTOR))
    return tuple(entries)


def _fs_at(f, offset: int) -> str | None:
    f.seek(offset)
    block = f.read(4096)
    for name, at, magic in FS_MAGICS:
        if block[at:at + len(magic)] == magic:
            return name
    return None


def inspect_artifact(path: Path) -> BootArtifact:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"artifact '{path}' does not exist", "pass an initrd or image that osbuilder wrote")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(PFN_OFFSET + len(PFN_SIGNATURE))
        if codec_of(head) is not None:
            return BootArtifact(path, "initrd", size)
        f.seek(0x8001)
        if f.read(5) == b"CD001":
            return BootArtifact(path, "iso", size, fs="iso9660")
        if head[510:512] == b"\x55\xaa":
            partitions = _partitions(head)
            if not partitions:
                raise UserError(f"disk image '{path}' has an empty partition table", "rebuild it with osbuilder image")
            fs = _fs_at(f, partitions[0][0])
            if fs is None:
                raise UserError(f"disk image '{path}': partition 1 holds no ext4, xfs or erofs file system",
                                "rebuild it with osbuilder image")
            return BootArtifact(path, "disk", size, dax=head[PFN_OFFSET:].startswith(PFN_SIGNATURE), fs=fs,
                                partitions=partitions)
    raise UserError(f"'{path}' is neither an initrd, a disk image nor an ISO",
                    "pass an artifact osbuilder wrote (initrd, image or iso)")


def verity_params_for(artifact: BootArtifact) -> str:
    """The one-line verity parameters osbuilder wrote beside the image."""
    for candidate in (artifact.path.with_name(artifact.path.name + ".root_hash.txt"),
                      artifact.path.with_name("root_hash.txt")):
        if candidate.is_file():
            line = candidate.read_text().strip()
            if line.startswith("root_hash="):
                return line
    raise UserError(f"'{artifact.path}' has a dm-verity hash partition but no root hash file beside it",
                    f"put {artifact.path.name}.root_hash.txt (written by osbuilder image --verity) next to it")
