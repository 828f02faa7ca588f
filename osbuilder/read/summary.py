"""Read a guest's osbuilder.yaml out of any artifact, without booting, mounting or root:
a rootfs directory through GuestRoot, anything packed through the packer of its format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from osbuilder.fsutil import GuestRoot
from osbuilder.guest_layout import SUMMARY_PATH
from osbuilder.pack.artifact import ArtifactInfo
from osbuilder.pack.registry import PACKERS
from osbuilder.rootfs.summary import parse_summary
from osbuilder.runner import Runner


def read_guest_file(artifact: ArtifactInfo, guest_path: str, workdir: Path, runner: Runner) -> bytes | None:
    if artifact.kind == "rootfs":
        path = GuestRoot(artifact.path).resolve(guest_path)
        return path.read_bytes() if path.is_file() else None
    return PACKERS[artifact.kind].read_file(artifact, guest_path, workdir, runner)


def read_artifact_summary(artifact: ArtifactInfo, workdir: Path, runner: Runner) -> dict[str, Any] | None:
    """The parsed osbuilder.yaml, or None when the artifact holds none."""
    data = read_guest_file(artifact, SUMMARY_PATH, workdir, runner)
    if data is None:
        return None
    return parse_summary(data.decode(errors="replace"), source=f"{artifact.path}:{SUMMARY_PATH}")
