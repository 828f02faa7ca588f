"""An artifact a packer wrote: its path, digest, size and format-specific details."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Artifact:
    path: Path
    format: str
    sha256: str
    size: int
    details: dict[str, object]

    def manifest_entry(self) -> dict[str, object]:
        return {"file": self.path.name, "format": self.format, "size": self.size, "sha256": self.sha256,
                **self.details}
