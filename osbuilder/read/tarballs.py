"""Tarballs in whatever compression they come in, made plain for tarfile (which reads gzip,
xz and bzip2 but not zstd or lz4): the codec table's decompressor does the rest."""

from __future__ import annotations

from pathlib import Path

from osbuilder.foundation.documents import reading_input
from osbuilder.pack.compress import codec_of
from osbuilder.foundation.runner import FILESYSTEM, Runner


def plain_tarball(path: Path, workdir: Path, runner: Runner) -> Path:
    """`path` itself when tarfile reads it, else a decompressed copy in `workdir`."""
    with open(path, "rb") as f:
        codec = codec_of(f.read(16))
    if codec is None or not codec.decompress or codec.name in ("gzip", "xz"):
        return path
    plain = workdir / f"{path.name}.tar"
    try:
        with reading_input(f"pass a complete {codec.name} tarball"), open(plain, "wb") as out, \
                open(path, "rb") as src, runner.pipe_to(codec.decompress, out, limit=FILESYSTEM,
                                                       hint=f"'{path}' is not a valid {codec.name} stream") as stdin:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                stdin.write(chunk)
    except BaseException:
        plain.unlink(missing_ok=True)
        raise
    return plain
