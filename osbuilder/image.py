"""Packing a guest tree into a disk image: filesystem, partition table(s), DAX header."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from osbuilder.errors import UserError
from osbuilder.fsutil import data_regions
from osbuilder.guest_tree import GuestTree
from osbuilder.artifact import Artifact
from osbuilder.pack.disk import MiB, Layout, plan_layout, round_up
from osbuilder.pack.fs import FsRequest, get_filesystem
from osbuilder.pack.sizing import measure_tree
from osbuilder.pack.verity import VerityTree, format_verity
from osbuilder.runner import Runner

IMAGE_NAME = "kata-containers.img"
ROOT_HASH_NAME = "root_hash.txt"
ISO_NAME = "kata-containers.iso"
DAX_ALIGN_MIB = 128  # the NVDIMM mapping is hot-plugged in 128 MiB memory sections
PLAIN_ALIGN_MIB = 1


@dataclass(frozen=True)
class ImageOptions:
    fs: str = "ext4"
    dax: bool = True
    free_space_mib: int = 0
    align_mib: int | None = None
    block_size: int = 4096
    verity: bool = False

    def validate(self) -> None:
        filesystem = get_filesystem(self.fs)
        filesystem.check_block_size(self.block_size)
        if self.free_space_mib < 0:
            raise UserError(f"--free-space {self.free_space_mib} is negative", "pass 0 or more MiB")
        if self.align_mib is not None and self.align_mib < 1:
            raise UserError(f"--align {self.align_mib} must be at least 1 MiB", "pass --align 1 or more")
        if self.dax and self.block_size != 4096:
            raise UserError("a DAX image needs 4096-byte blocks (the page size)", "pass --block-size 4096 or --no-dax")

    @property
    def alignment(self) -> int:
        return (self.align_mib or (DAX_ALIGN_MIB if self.dax else PLAIN_ALIGN_MIB)) * MiB


def _derived(tree: GuestTree, options: ImageOptions, purpose: str) -> bytes:
    """Stable bytes from everything that decides the image (the tree's record, the options, the epoch)."""
    identity = json.dumps({"summary": tree.summary, "options": asdict(options), "epoch": tree.epoch,
                           "purpose": purpose}, sort_keys=True, default=str)
    return hashlib.sha256(identity.encode()).digest()


def _copy_sparse(source: Path, dest_fd: int, offset: int) -> None:
    """Copy `source` into dest at `offset`, skipping holes so the image stays sparse."""
    with open(source, "rb") as src:
        for start, end in data_regions(src.fileno(), os.fstat(src.fileno()).st_size):
            src.seek(start)
            os.lseek(dest_fd, offset + start, os.SEEK_SET)
            remaining = end - start
            while remaining:
                chunk = src.read(min(remaining, 4 * MiB))
                os.write(dest_fd, chunk)
                remaining -= len(chunk)


def pack_image(tree: GuestTree, output: Path, options: ImageOptions, workdir: Path, runner: Runner) -> Artifact:
    options.validate()
    filesystem = get_filesystem(options.fs)
    stats = measure_tree(tree.root, options.block_size)
    fs_image = workdir / f"rootfs.{filesystem.name}"
    fs_uuid = str(uuid.UUID(bytes=_derived(tree, options, "fs-uuid")[:16], version=4))
    request = FsRequest(tree=tree.root, image=fs_image, size=None, epoch=tree.epoch, uuid=fs_uuid,
                        block_size=options.block_size, stats=stats, workdir=workdir)
    free = options.free_space_mib * MiB
    signature = int.from_bytes(_derived(tree, options, "disk-signature")[:4], "little")
    if filesystem.content_sized:
        filesystem.make(request, runner)
        fs_size = fs_image.stat().st_size
        if options.verity:
            fs_size = round_up(fs_size, MiB)  # verity covers the whole data partition
            os.truncate(fs_image, fs_size)
        layout = plan_layout([fs_size + free], options.dax, options.alignment)
    else:
        needed = filesystem.needed_bytes(stats) + free
        if options.verity:
            # The data partition is exactly the filesystem: verity hashes every block of it.
            fs_size = round_up(needed, MiB)
        else:
            fs_size = plan_layout([needed], options.dax, options.alignment).partitions[0].size
        layout = plan_layout([fs_size], options.dax, options.alignment)
        request = dataclasses.replace(request, size=fs_size)
        if filesystem.writes_at_offset and not options.verity:
            # Straight into the disk image: no second copy of the filesystem.
            _assemble(output, layout, signature, [])
            filesystem.make(dataclasses.replace(request, image=output, offset=layout.first_partition_offset), runner)
        else:
            with open(fs_image, "wb") as f:
                f.truncate(fs_size)
            filesystem.make(request, runner)
    contents = [fs_image] if fs_image.exists() else []
    verity: VerityTree | None = None
    if options.verity:
        hash_file = workdir / "verity.hash"
        verity = format_verity(fs_image, hash_file, _derived(tree, options, "verity-salt").hex(), runner)
        layout = plan_layout([fs_size, hash_file.stat().st_size], options.dax, options.alignment)
        contents.append(hash_file)
    if contents:
        _assemble(output, layout, signature, contents)
    for path in contents:
        path.unlink()
    details: dict[str, object] = {"fs": filesystem.name, "dax": options.dax, "fs_uuid": fs_uuid,
                                  "partition_offset": layout.first_partition_offset,
                                  "alignment": options.alignment, "init_mode": tree.init_mode}
    if verity is not None:
        details["verity"] = verity.as_json()
    return Artifact(path=output, format="image", size=output.stat().st_size,
                    details=details)


def pack_iso(tree: GuestTree, output: Path) -> Artifact:
    from osbuilder.pack.iso import write_iso

    counts = write_iso(tree.root, output, tree.epoch)
    return Artifact(path=output, format="iso", size=output.stat().st_size,
                    details={"init_mode": tree.init_mode, **counts})


def _assemble(output: Path, layout: Layout, signature: int, contents: list[Path]) -> None:
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, layout.size)
        for offset, data in layout.header(signature):
            os.pwrite(fd, data, offset)
        for partition, content in zip(layout.partitions, contents):
            _copy_sparse(content, fd, partition.start)
    finally:
        os.close(fd)
