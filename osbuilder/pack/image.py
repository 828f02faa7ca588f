"""The disk image packer: filesystem, partition table(s), DAX header, dm-verity; and reading
one back (partition table, DAX header and the filesystem in partition 1)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import struct
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from osbuilder.pack.catalog import PACKER_CATALOG
from osbuilder.foundation.errors import BuildError, UserError
from osbuilder.foundation.fsutil import data_regions
from osbuilder.pack.artifact import Artifact, ArtifactInfo, PackDetails
from osbuilder.pack.base import BOOTS_AS_DISK, Packer, PackContext, ReleaseNames, RuntimeSetting, RuntimeSlot
from osbuilder.pack.disk import PFN_OFFSET, PFN_SIGNATURE, PFN_SIZE, SECTOR, MiB, Layout, fletcher64, plan_layout, round_up
from osbuilder.pack.fs import FILESYSTEMS, FsRequest, FsSource, get_filesystem
from osbuilder.pack.guest_tree import GuestTree
from osbuilder.pack.sizing import measure_tree
from osbuilder.pack.verity import VERITY_FIELDS, VerityTree, format_verity, parse_verity_params
from osbuilder.read.view import GuestView
from osbuilder.foundation.runner import Runner
from osbuilder.foundation.settings import setting

# Kata's names for the kernel parameters of a measured rootfs, beside the image (docs/kata-contract.md,
# release packaging): root_hash_<label>.txt, the label being the variant, `base` for the plain image.
DEFAULT_ROOT_HASH_LABEL = "base"
ROOT_HASH_PATTERN = "root_hash_<label>.txt"
LEGACY_ROOT_HASH_NAME = "root_hash.txt"  # what osbuilder wrote before it used Kata's names
ROOT_HASH_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def root_hash_file_name(label: str) -> str:
    return f"root_hash_{label}.txt"
VERITY_MODULES = ("dm_verity",)
EXTENSION_FS = "erofs"
DAX_ALIGN_MIB = 128  # the NVDIMM mapping is hot-plugged in 128 MiB memory sections
PLAIN_ALIGN_MIB = 1


@dataclass(frozen=True)
class ImageOptions:
    fs: str = setting("ext4", help="image filesystem", choices=lambda: FILESYSTEMS)
    dax: bool = setting(True, help="NVDIMM/DAX header, so the image can be plugged as an NVDIMM (--no-dax: "
                        "a plain MBR for virtio-blk)", boolean=True)
    free_space: int = setting(0, help="free space to leave in the filesystem, in MiB", metavar="MiB", parse=int)
    align: int | None = setting(None, help="round the image up to this many MiB (default: 128 with DAX, "
                                "1 without)", metavar="MiB", parse=int)
    block_size: int = setting(4096, help="filesystem block size in bytes", metavar="BYTES", parse=int)
    # None (not given) is off, except for an extension image (pack/source.py, extension_defaults).
    verity: bool | None = setting(None, help="add a dm-verity hash partition after the data partition (its kernel "
                                  f"parameters go to {ROOT_HASH_PATTERN} beside the image; default: on for an "
                                  "extension image, else off)", boolean=True)
    root_hash_label: str | None = setting(None, help="the label of a verity image's root_hash_<label>.txt (Kata's "
                                          "ROOT_HASH_VARIANT; default: the --variant, else base)", metavar="LABEL")

    def __post_init__(self) -> None:
        object.__setattr__(self, "verity", bool(self.verity))

    def validate(self) -> None:
        filesystem = get_filesystem(self.fs)
        filesystem.check_block_size(self.block_size)
        if self.free_space < 0:
            raise UserError(f"--free-space {self.free_space} is negative", "pass 0 or more MiB")
        if self.align is not None and self.align < 1:
            raise UserError(f"--align {self.align} must be at least 1 MiB", "pass --align 1 or more")
        if self.dax and self.block_size != 4096:
            raise UserError("a DAX image needs 4096-byte blocks (the page size)", "pass --block-size 4096 or --no-dax")
        if self.root_hash_label is not None:
            if not self.verity:
                raise UserError("--root-hash-label names the root-hash file of a verity image", "add --verity")
            if not ROOT_HASH_LABEL.fullmatch(self.root_hash_label):
                raise UserError(f"--root-hash-label '{self.root_hash_label}' is not a plain label",
                                "use letters, digits, '.', '_' or '-' (e.g. confidential)")

    @property
    def root_hash_file(self) -> str:
        return root_hash_file_name(self.root_hash_label or DEFAULT_ROOT_HASH_LABEL)

    @property
    def alignment(self) -> int:
        return (self.align or (DAX_ALIGN_MIB if self.dax else PLAIN_ALIGN_MIB)) * MiB


def _derived(tree: GuestTree, options: ImageOptions, purpose: str) -> bytes:
    """Stable bytes from everything that decides the image (the tree's record, the options, the epoch)."""
    identity = json.dumps({"summary": tree.summary, "options": asdict(options), "epoch": tree.epoch,
                           "purpose": purpose}, sort_keys=True, default=str)
    return hashlib.sha256(identity.encode()).digest()


def _copy_sparse(source: Path, dest_fd: int, offset: int) -> None:
    """Copy `source` into dest at `offset`, skipping holes so the image stays sparse. The
    kernel copies (copy_file_range: the bytes never pass through osbuilder); where it cannot
    (another filesystem, an old kernel), they are read and written."""
    with open(source, "rb") as src:
        fd = src.fileno()
        for start, end in data_regions(fd, os.fstat(fd).st_size):
            position = start
            with contextlib.suppress(OSError):  # EXDEV, ENOSYS, EOPNOTSUPP: copied below
                while position < end:
                    copied = os.copy_file_range(fd, dest_fd, end - position, position, offset + position)
                    if not copied:
                        break
                    position += copied
            while position < end:
                chunk = os.pread(fd, min(end - position, 4 * MiB), position)
                if not chunk:
                    raise BuildError(f"{source} shrank while it was copied into the image",
                                     "do not modify the work directory while packing")
                os.pwrite(dest_fd, chunk, offset + position)
                position += len(chunk)


@dataclass(frozen=True)
class ImageDetails(PackDetails):
    fs: str
    dax: bool
    fs_uuid: str
    partition_offset: int
    alignment: int
    verity: VerityTree | None = None

    def as_json(self) -> dict[str, object]:
        data = super().as_json()
        if self.verity is not None:
            data["verity"] = self.verity.as_json()
        return data


def root_hash_beside(image: Path) -> Path | None:
    """The root-hash file of `image` in its directory. A merged release holds one per variant
    (root_hash_base.txt, root_hash_confidential.txt, ...): the image's own is the one whose
    label ends its name (kata-containers-confidential.img), the longest such label winning, and
    root_hash_base.txt for a name without one. Older osbuilder output has root_hash.txt."""
    found = {path.name[len("root_hash_"):-len(".txt")]: path for path in image.parent.glob(root_hash_file_name("*"))
             if path.is_file()}
    if len(found) == 1:
        return next(iter(found.values()))
    stem = image.name.rsplit(".", 1)[0]
    matching = sorted((label for label in found if stem.endswith(f"-{label}")), key=len)
    if matching:
        return found[matching[-1]]
    if DEFAULT_ROOT_HASH_LABEL in found:
        return found[DEFAULT_ROOT_HASH_LABEL]
    legacy = image.with_name(LEGACY_ROOT_HASH_NAME)
    return legacy if legacy.is_file() else None


def verity_params_beside(artifact: ArtifactInfo) -> str | None:
    """The one-line verity parameters osbuilder wrote beside the image, when they are there."""
    candidate = root_hash_beside(artifact.path)
    if candidate is not None:
        line = candidate.read_text().strip()
        if line.startswith("root_hash="):
            return line
    return None


def _carries_verity(expected: str) -> Any:
    wanted = parse_verity_params(expected)
    return lambda given: all(parse_verity_params(str(given or "")).get(k) == wanted.get(k) for k in VERITY_FIELDS)


class ImagePacker(Packer):
    name = "image"
    help = PACKER_CATALOG[name].help
    default_file_name = "kata-containers.img"
    noun = "a disk image"
    Options = ImageOptions
    release = ReleaseNames(suffix="image", link="kata-containers{variant}.img", tarball="image")
    runtime_slot = RuntimeSlot(key="image", preference=0)
    boots_as = BOOTS_AS_DISK

    def validate(self, options: ImageOptions) -> None:
        options.validate()

    def with_release_defaults(self, options: ImageOptions, variant: str | None) -> ImageOptions:
        # Kata labels a measured image's root hash by its variant.
        if options.verity and options.root_hash_label is None and variant is not None:
            return dataclasses.replace(options, root_hash_label=variant)
        return options

    def as_extension(self, options: ImageOptions, label: str) -> ImageOptions:
        if options.fs != EXTENSION_FS:
            raise UserError(f"an extension image is {EXTENSION_FS} (Kata's extension mount reads nothing else), "
                            f"not {options.fs}", f"drop --fs {options.fs}")
        if options.verity and options.root_hash_label is None:
            return dataclasses.replace(options, root_hash_label=label)
        return options

    def pack(self, tree: GuestTree, out: Path, options: ImageOptions, context: PackContext) -> Artifact:
        return pack_image(tree, out, options, context.workdir, context.runner)

    def describe(self, artifact: Artifact) -> str:
        details = artifact.details
        assert isinstance(details, ImageDetails)
        return f"{details.fs}, {'DAX' if details.dax else 'no DAX'}"

    def describe_info(self, artifact: ArtifactInfo) -> str:
        return f"{artifact.fs} image, {'DAX' if artifact.dax else 'no DAX'}{', dm-verity' if artifact.verity else ''}"

    def runtime_settings(self, artifact: ArtifactInfo) -> list[RuntimeSetting]:
        settings = [
            RuntimeSetting("rootfs_type", artifact.fs, "ext4", "The image's filesystem.", "rootfs-type-mismatch",
                           "error", f"rootfs_type is not the image's filesystem, {artifact.fs}",
                           f'set rootfs_type = "{artifact.fs}"'),
            RuntimeSetting("disable_image_nvdimm", not artifact.dax, False,
                           "The image has the NVDIMM/DAX header: plug it as an NVDIMM." if artifact.dax else
                           "No DAX header: plug it as virtio-blk.",
                           "dax-header-unused" if artifact.dax else "dax-header-missing",
                           "info" if artifact.dax else "error",
                           "the image has the NVDIMM/DAX header but disable_image_nvdimm = true plugs it as "
                           "virtio-blk, so DAX goes unused" if artifact.dax else
                           "the image has no NVDIMM/DAX header but disable_image_nvdimm = false plugs it as an "
                           "NVDIMM: the guest cannot find its root",
                           "set disable_image_nvdimm = false to use DAX" if artifact.dax else
                           "set disable_image_nvdimm = true, or rebuild the image without --no-dax"),
        ]
        if artifact.verity:
            params = verity_params_beside(artifact)
            settings.append(RuntimeSetting(
                "kernel_params", params, "",
                f"The measured rootfs: its dm-verity root hash, salt and block counts ({ROOT_HASH_PATTERN}).",
                "verity-params-missing", "error",
                "the image is a dm-verity root but kernel_params do not carry its root hash, salt and block counts"
                + ("" if params else f" (and no {ROOT_HASH_PATTERN} is beside it)"),
                f"add the line from {ROOT_HASH_PATTERN} to kernel_params",
                accepts=_carries_verity(params) if params else None))
        return settings

    def boot_modules(self, artifact: ArtifactInfo) -> tuple[str, ...]:
        return (get_filesystem(artifact.fs or "").kernel_module,) + (VERITY_MODULES if artifact.verity else ())

    def layout_facts(self, artifact: ArtifactInfo, view: GuestView) -> dict[str, Any]:
        layout: dict[str, Any] = {"partition_table": [{"number": i + 1, "offset": start, "size": length}
                                                      for i, (start, length) in enumerate(artifact.partitions)]}
        with open(artifact.path, "rb") as f:
            f.seek(PFN_OFFSET)
            block = f.read(PFN_SIZE)
        dax: dict[str, Any] = {"present": artifact.dax}
        if artifact.dax:
            recorded = struct.unpack_from("<Q", block, PFN_SIZE - 8)[0]
            dax["checksum_ok"] = fletcher64(block[:-8] + bytes(8)) == recorded
            dax["mode"] = struct.unpack_from("<I", block, 72)[0]
            dax["align"] = struct.unpack_from("<I", block, 84)[0]
            dax["valid"] = dax["checksum_ok"] and dax["mode"] == 1
        layout["dax"] = dax
        sidecar = root_hash_beside(artifact.path) if artifact.verity else None
        layout["verity"] = {"hash_partition": artifact.verity, "root_hash_sidecar": str(sidecar) if sidecar else None}
        length = artifact.partitions[0][1]
        # A content-sized filesystem (erofs) is exactly as large as what it holds.
        used = length if get_filesystem(artifact.fs or "").content_sized else view.used_bytes()
        layout["filesystem"] = {"type": artifact.fs, "size": length, "used": used}
        return layout

    def recognise(self, path: Path, f: BinaryIO, size: int) -> ArtifactInfo | None:
        head = f.read(PFN_OFFSET + len(PFN_SIGNATURE))
        if head[510:512] != b"\x55\xaa":
            return None
        partitions = _partitions(head)
        if not partitions:
            raise UserError(f"disk image '{path}' has an empty partition table", "rebuild it with osbuilder image")
        end = max(start + length for start, length in partitions)
        if end > size:
            raise UserError(f"disk image '{path}' is truncated: its partitions end at byte {end}, the file at "
                            f"{size}", "copy the whole image again")
        f.seek(partitions[0][0])
        block = f.read(4096)
        fs = next((fs.name for fs in FILESYSTEMS.values()
                   if block[fs.magic[0]:fs.magic[0] + len(fs.magic[1])] == fs.magic[1]), None)
        if fs is None:
            raise UserError(f"disk image '{path}': partition 1 holds no {', '.join(FILESYSTEMS)} file system",
                            "rebuild it with osbuilder image")
        return ArtifactInfo(path, self.name, size, fs=fs, root_partition=1, partitions=partitions,
                            dax=head[PFN_OFFSET:].startswith(PFN_SIGNATURE))

    def open_view(self, artifact: ArtifactInfo, workdir: Path, runner: Runner) -> GuestView:
        offset, length = artifact.partitions[0]
        source = FsSource(image=artifact.path, offset=offset, length=length, workdir=workdir)
        return get_filesystem(artifact.fs or "").open_view(source, runner)


def _partitions(head: bytes) -> tuple[tuple[int, int], ...]:
    """MBR #1's non-empty entries as (offset, length) in bytes."""
    entries = []
    for i in range(4):
        entry = head[446 + 16 * i: 446 + 16 * (i + 1)]
        start, count = struct.unpack_from("<II", entry, 8)
        if entry[4] and count:
            entries.append((start * SECTOR, count * SECTOR))
    return tuple(entries)


def pack_image(tree: GuestTree, output: Path, options: ImageOptions, workdir: Path, runner: Runner) -> Artifact:
    """The image, for options the packer's validate() accepted (build and `image` call it first)."""
    filesystem = get_filesystem(options.fs)
    stats = measure_tree(tree.listing, options.block_size)
    fs_image = workdir / f"rootfs.{filesystem.name}"
    fs_uuid = str(uuid.UUID(bytes=_derived(tree, options, "fs-uuid")[:16], version=4))
    request = FsRequest(image=fs_image, size=None, epoch=tree.epoch, uuid=fs_uuid, block_size=options.block_size,
                        stats=stats, workdir=workdir, listing=tree.listing, machine_id=tree.mode.holds_agent)
    free = options.free_space * MiB
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
    details = ImageDetails(init_mode=tree.init_mode, fs=filesystem.name, dax=options.dax, fs_uuid=fs_uuid,
                           partition_offset=layout.first_partition_offset, alignment=options.alignment,
                           verity=verity)
    sidecars = {options.root_hash_file: verity.kernel_params() + "\n"} if verity is not None else {}
    return Artifact(path=output, format=ImagePacker.name, size=output.stat().st_size, details=details,
                    sidecars=sidecars)


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
