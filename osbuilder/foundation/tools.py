"""What the build host offers, probed once at start-up and passed around.

Keeping every `which` in one place means no tool-version branching scattered through
the packers."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field


@dataclass(frozen=True)
class HostTools:
    paths: dict[str, str] = field(default_factory=dict)

    PROBED = ("gzip", "zstd", "xz", "lz4")

    @classmethod
    def probe(cls) -> "HostTools":
        return cls({name: path for name in cls.PROBED if (path := shutil.which(name))})

    def has(self, name: str) -> bool:
        return name in self.paths
