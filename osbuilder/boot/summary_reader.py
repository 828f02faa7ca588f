"""Read an artifact's osbuilder.yaml without booting or mounting it, so `boot` knows which
agent to wait for and which init mode the guest must report.

initrds are decompressed and walked as newc; ext4 images are read with debugfs at the
partition's offset. For erofs, xfs and ISO images this returns None (their tools cannot
print one file without extracting the tree), and `boot` then accepts either agent's line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from osbuilder.boot.artifact import BootArtifact
from osbuilder.pack.compress import codec_of
from osbuilder.runner import Runner
from osbuilder.summary import SUMMARY_PATH, parse_summary

NEWC_HEADER = 110


def _newc_member(archive: Path, wanted: bytes) -> bytes | None:
    with open(archive, "rb") as f:
        while True:
            header = f.read(NEWC_HEADER)
            if len(header) < NEWC_HEADER or header[:6] != b"070701":
                return None
            try:
                size = int(header[54:62], 16)
                namesize = int(header[94:102], 16)
            except ValueError:  # not newc after all: the boot will tell
                return None
            name = f.read(namesize)[:-1]
            f.seek(-(NEWC_HEADER + namesize) % 4, 1)
            if name == b"TRAILER!!!":
                return None
            if name == wanted:
                return f.read(size)
            f.seek(size + (-size % 4), 1)


def read_artifact_summary(artifact: BootArtifact, workdir: Path, runner: Runner) -> dict[str, Any] | None:
    wanted = SUMMARY_PATH.lstrip("/")
    if artifact.kind == "initrd":
        with open(artifact.path, "rb") as f:
            codec = codec_of(f.read(6))
        archive = artifact.path
        if codec is not None and codec.decompress:
            archive = workdir / "initrd.cpio"
            with open(archive, "wb") as out, runner.pipe_to(codec.decompress, out) as stdin, \
                    open(artifact.path, "rb") as src:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    stdin.write(chunk)
        data = _newc_member(archive, wanted.encode())
        if archive != artifact.path:
            archive.unlink()
        return parse_summary(data.decode()) if data else None
    if artifact.kind == "disk" and artifact.fs == "ext4":
        offset = artifact.partitions[0][0]
        result = runner.run(["debugfs", "-R", f"cat {SUMMARY_PATH}", f"{artifact.path}?offset={offset}"], check=False)
        return parse_summary(result.stdout) if result.returncode == 0 and "agent:" in result.stdout else None
    return None
