"""dm-verity: a hash tree for the data partition, made on plain files (no loop devices)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from osbuilder.foundation.errors import BuildError
from osbuilder.foundation.runner import FILESYSTEM, Runner

BLOCK = 4096


@dataclass(frozen=True)
class VerityTree:
    root_hash: str
    salt: str
    data_blocks: int
    data_block_size: int = BLOCK
    hash_block_size: int = BLOCK

    def kernel_params(self) -> str:
        """The one-line parameter file format Kata's measured rootfs uses."""
        return (f"root_hash={self.root_hash},salt={self.salt},data_blocks={self.data_blocks},"
                f"data_block_size={self.data_block_size},hash_block_size={self.hash_block_size}")

    def as_json(self) -> dict[str, object]:
        return {"root_hash": self.root_hash, "salt": self.salt, "data_blocks": self.data_blocks,
                "data_block_size": self.data_block_size, "hash_block_size": self.hash_block_size,
                "kernel_params": self.kernel_params()}


VERITY_FIELDS = ("root_hash", "salt", "data_blocks", "data_block_size", "hash_block_size")


def parse_verity_params(text: str) -> dict[str, str]:
    """The key=value pairs of a kernel command line, split at spaces and commas, keyed by the
    name after the last dot (Kata's runtimes prefix them, e.g. rootfs_verity.root_hash)."""
    pairs = {}
    for word in text.replace(",", " ").split():
        key, sep, value = word.partition("=")
        if sep:
            pairs[key.rpartition(".")[2]] = value
    return pairs


def format_verity(data: Path, hash_file: Path, salt: str, runner: Runner) -> VerityTree:
    size = data.stat().st_size
    if size % BLOCK:
        raise BuildError(f"verity data {data} is not a whole number of {BLOCK}-byte blocks")
    out = runner.run(["veritysetup", "format", "--no-superblock", "--hash=sha256", f"--salt={salt}",
                      f"--data-block-size={BLOCK}", f"--hash-block-size={BLOCK}", str(data), str(hash_file)], limit=FILESYSTEM).stdout
    match = re.search(r"^Root hash:\s+([0-9a-f]+)", out, re.M)
    if match is None:
        raise BuildError("veritysetup printed no root hash", "rerun with --verbose to see its output")
    return VerityTree(root_hash=match.group(1), salt=salt, data_blocks=size // BLOCK)


def root_hash_of(hash_area: bytes, salt: str) -> str:
    """The root hash of a hash tree made with --no-superblock: veritysetup stores the top
    level first, so the root is sha256(salt || the first hash block)."""
    return hashlib.sha256(bytes.fromhex(salt) + hash_area).hexdigest()


def read_root_hash(image: Path, hash_offset: int, salt: str, hash_block_size: int = BLOCK,
                   data_offset: int | None = None, data_blocks: int | None = None,
                   data_block_size: int = BLOCK) -> str:
    """The root hash of the hash partition at `hash_offset` of `image`, for `salt`. A tree of
    one data block has no hash level: its root is that block's hash."""
    with open(image, "rb") as f:
        if data_blocks == 1 and data_offset is not None:
            f.seek(data_offset)
            return root_hash_of(f.read(data_block_size), salt)
        f.seek(hash_offset)
        return root_hash_of(f.read(hash_block_size), salt)
