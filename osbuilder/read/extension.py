"""An extension image read back: what boot attaches, the runtime fragment lists and check
compares. It is a disk image whose tree records (or shows) init mode none."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osbuilder.foundation.errors import UserError
from osbuilder.foundation.runner import Runner
from osbuilder.pack.artifact import ArtifactInfo
from osbuilder.pack.base import BOOTS_AS_DISK
from osbuilder.pack.registry import PACKERS
from osbuilder.read.kind import packed_artifact
from osbuilder.read.summary import open_view, summary_of
from osbuilder.rootfs.initmode import INIT_MODES, recognise_init_mode
from osbuilder.rootfs.summary import recorded_agent, recorded_extension


@dataclass(frozen=True)
class ExtensionImage:
    artifact: ArtifactInfo
    summary: dict[str, Any] | None

    @property
    def recorded_name(self) -> str | None:
        name = recorded_extension(self.summary).get("name")
        return name if isinstance(name, str) else None


def extension_problem(path: Path, workdir: Path, runner: Runner) -> tuple[ExtensionImage | None, str | None]:
    """(the image, None), or (None, why `path` is not an extension image)."""
    if not Path(path).is_file():
        return None, f"'{path}' does not exist"
    artifact = packed_artifact(Path(path))
    if artifact is None or PACKERS[artifact.kind].boots_as != BOOTS_AS_DISK:
        return None, f"'{path}' is not a disk image"
    with open_view(artifact, workdir, runner) as view:
        summary = summary_of(view, str(path))
        mode = INIT_MODES.get(str(recorded_agent(summary).get("init-mode")))
        if mode is None:
            mode, _ = recognise_init_mode(view)
    if mode is None or mode.holds_agent:
        return None, f"'{path}' is a base image (init mode {mode.name if mode else 'unknown'}), not an extension"
    return ExtensionImage(artifact, summary), None


def read_extension(path: Path, flag: str, workdir: Path, runner: Runner) -> ExtensionImage:
    image, problem = extension_problem(path, workdir, runner)
    if image is None:
        raise UserError(f"{flag}: {problem}", "pass an image built with osbuilder build --init none --extension NAME")
    return image
