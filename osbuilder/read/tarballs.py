"""Tarballs in whatever compression they come in, made plain for tarfile (which reads gzip,
xz and bzip2 but not zstd or lz4): the codec table's decompressor does the rest."""

from __future__ import annotations

from pathlib import Path

from osbuilder.pack.compress import codec_of
from osbuilder.foundation.runner import FILESYSTEM, Runner


def plain_tarball(path: Path, workdir: Path, runner: Runner) -> Path:
    """`path` itself when tarfile reads it, else a decompressed copy in `workdir`."""
    with open(path, "rb") as f:
        codec = codec_of(f.read(16))
    if codec is None or not codec.decompress or codec.name in ("gzip", "xz"):
        return path
    plain = workdir / f"{path.name}.tar"
    with open(plain, "wb") as out, open(path, "rb") as src, \
            runner.pipe_to(codec.decompress, out, hint=f"'{path}' is not a valid {codec.name} stream", limit=FILESYSTEM) as stdin:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            stdin.write(chunk)
    return plain
