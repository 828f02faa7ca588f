"""The guest inside any artifact, without booting, mounting or root: a rootfs directory as
it is, anything packed through the packer of its format; and its osbuilder.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from osbuilder.foundation.documents import reading_input
from osbuilder.foundation.guest_layout import SUMMARY_PATH
from osbuilder.pack.artifact import ROOTFS_KIND, ArtifactInfo
from osbuilder.pack.registry import PACKERS
from osbuilder.read.view import DirView, GuestView
from osbuilder.rootfs.summary import SUMMARY_LIMIT, parse_summary
from osbuilder.foundation.runner import Runner


def open_view(artifact: ArtifactInfo, workdir: Path, runner: Runner,
              wanted: frozenset[str] | None = None) -> GuestView:
    """The guest tree of any artifact (close it, or use it as a context manager); with
    `wanted`, only those guest paths will be read (a streamed format keeps nothing else)."""
    if artifact.kind == ROOTFS_KIND:
        return DirView(artifact.path)
    packer = PACKERS[artifact.kind]
    # A tool that cannot read the artifact (a cut stream, a damaged filesystem) is bad input.
    with reading_input("pass an artifact that is whole (osbuilder inspect names what it finds)"):
        if wanted is None:
            return packer.open_view(artifact, workdir, runner)
        return packer.open_partial_view(artifact, workdir, runner, wanted)


def summary_of(view: GuestView, source: str) -> dict[str, Any] | None:
    """The parsed osbuilder.yaml in a guest view, or None when there is none."""
    data = view.read_file(SUMMARY_PATH, limit=SUMMARY_LIMIT)
    if data is None:
        return None
    return parse_summary(data.decode(errors="replace"), source=f"{source}:{SUMMARY_PATH}")


def read_artifact_summary(artifact: ArtifactInfo, workdir: Path, runner: Runner) -> dict[str, Any] | None:
    """The parsed osbuilder.yaml, or None when the artifact holds none; a format that is
    streamed (an initrd) keeps nothing else of what it unpacks to."""
    with open_view(artifact, workdir, runner, frozenset({SUMMARY_PATH})) as view:
        return summary_of(view, str(artifact.path))
