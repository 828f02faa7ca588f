"""Compression for initrds: parallel external tools when present, Python otherwise.

gzip is the default because Kata's guest kernels enable only CONFIG_RD_GZIP. It is
written in Python, in independently compressed pieces on every core (gzip_pieces.py), so
that a rebuild can reuse the pieces it did not change. Every codec's output is
deterministic: no file name or timestamp in any header, and the parallel tools split work
by fixed block sizes, not by how many cores there are.
"""

from __future__ import annotations

import contextlib
import lzma
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator

from osbuilder.foundation.errors import UserError, lookup
from osbuilder.pack.gzip_pieces import PiecewiseGzipWriter, PieceStore
from osbuilder.foundation.runner import FILESYSTEM, Runner
from osbuilder.foundation.tools import HostTools


@dataclass(frozen=True)
class Codec:
    name: str
    default_level: int
    min_level: int
    max_level: int
    # External commands in order of preference: (tool, argv builder from level).
    commands: tuple[tuple[str, Callable[[int], list[str]]], ...]
    # In Python (the fallback, or for gzip the only way): wraps the output file in a
    # compressing stream; the store, where given, holds pieces earlier builds compressed.
    python: Callable[[BinaryIO, int, PieceStore | None], BinaryIO] | None
    kernel_config: str  # what the guest kernel must enable to unpack it
    magic: bytes  # how an artifact in this format starts
    decompress: tuple[str, ...]  # a filter from stdin to stdout; empty for "none"

    def check_level(self, level: int | None) -> int:
        if level is None:
            return self.default_level
        if not self.min_level <= level <= self.max_level:
            raise UserError(f"--level {level} is out of range for {self.name}",
                            f"use {self.min_level} to {self.max_level}")
        return level


CODECS: dict[str, Codec] = {
    codec.name: codec
    for codec in (
        # Level 6: within 0.5% of gzip -9's size at a fraction of its time (benchmarks/).
        Codec("gzip", 6, 1, 9, (), PiecewiseGzipWriter, "CONFIG_RD_GZIP", b"\x1f\x8b", ("gzip", "-dc")),
        # Level 6: 0.84x gzip -9's size; higher levels cost time and, with -T0, memory.
        Codec("zstd", 6, 1, 19,
              (("zstd", lambda level: ["zstd", "-q", "-c", "-T0", f"-{level}"]),),
              None, "CONFIG_RD_ZSTD", b"\x28\xb5\x2f\xfd", ("zstd", "-dc")),
        # The kernel's xz decoder supports only the crc32 check.
        Codec("xz", 6, 0, 9,
              (("xz", lambda level: ["xz", "-c", "-T0", "--check=crc32", f"-{level}"]),),
              lambda out, level, _store: lzma.LZMAFile(out, "wb", check=lzma.CHECK_CRC32, preset=level),
              "CONFIG_RD_XZ", b"\xfd7zXZ\x00", ("xz", "-dc")),
        # The kernel reads only lz4's legacy frame format.
        Codec("lz4", 9, 1, 12,
              (("lz4", lambda level: ["lz4", "-l", "-q", "-c", f"-{level}"]),),
              None, "CONFIG_RD_LZ4", b"\x02\x21\x4c\x18", ("lz4", "-dc")),
        Codec("none", 0, 0, 0, (), lambda out, level, _store: out, "", b"070701", ()),
    )
}


def get_codec(name: str) -> Codec:
    return lookup(CODECS, name, "compression")


def codec_of(head: bytes) -> Codec | None:
    """The codec an initrd was written with, from its first bytes (None: not an initrd)."""
    return next((codec for codec in CODECS.values() if head.startswith(codec.magic)), None)


@contextlib.contextmanager
def compressing(codec: Codec, level: int, out: BinaryIO, tools: HostTools, runner: Runner,
                store: PieceStore | None = None) -> Iterator[BinaryIO]:
    """A writable stream; what is written to it lands in `out`, compressed. `store` lends
    the gzip writer the pieces earlier builds compressed."""
    for tool, argv in codec.commands:
        if tools.has(tool):
            with runner.pipe_to(argv(level), out, limit=FILESYSTEM) as stream:
                yield stream
            return
    if codec.python is None:
        tool = codec.commands[0][0]
        raise UserError(f"compression {codec.name} needs the '{tool}' tool, which is not installed",
                        "run ./setup.sh, or choose --compression gzip")
    wrapper = codec.python(out, level, store)
    with wrapper if wrapper is not out else contextlib.nullcontext(out):
        yield wrapper  # type: ignore[misc]
    out.flush()
