"""An artifact a packer wrote: its path, size, format-specific details and, once asked for, its digest."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from osbuilder.agent import sha256_file


@dataclass(frozen=True)
class Artifact:
    path: Path
    format: str
    size: int
    details: dict[str, object]
    # Filled in by digested(): hashing a 256 MiB image costs about 0.3 s here, which only
    # a manifest needs, so the packers themselves don't pay it.
    sha256: str = ""

    def digested(self) -> Artifact:
        return self if self.sha256 else dataclasses.replace(self, sha256=sha256_file(self.path))

    def manifest_entry(self) -> dict[str, object]:
        assert self.sha256, "manifest entries are made from digested artifacts"
        return {"file": self.path.name, "format": self.format, "size": self.size, "sha256": self.sha256,
                **self.details}
