"""The base an extension image is checked against (--base): an image or a directory, read-only."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from osbuilder.foundation.runner import Runner
from osbuilder.read.view import GuestView


@contextlib.contextmanager
def base_view(base: Path | None, workdir: Path, runner: Runner) -> Iterator[GuestView | None]:
    """The tree of an extension's --base, or None."""
    if base is None:
        yield None
        return
    # Recognising an artifact loads every packer: only a build or pack given --base pays for it.
    from osbuilder.read.kind import recognise_artifact
    from osbuilder.read.summary import open_view

    with open_view(recognise_artifact(Path(base)), workdir, runner) as view:
        yield view
