"""The fixed interface every package-manager backend implements."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path

from osbuilder.arch import Arch
from osbuilder.runner import Runner


@dataclass(frozen=True)
class BootstrapRequest:
    """Everything that decides the bootstrapped tree's content."""

    distro: str
    release: str
    arch: Arch
    packages: tuple[str, ...]
    mirror: str
    components: tuple[str, ...]
    source_date_epoch: int | None

    def cache_key(self, backend: str) -> str:
        data = asdict(self)
        data["arch"] = self.arch.name
        data["packages"] = sorted(set(self.packages))
        data["backend"] = backend
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]


class Backend(ABC):
    name: str
    # Cross-architecture bootstraps run the guest's maintainer scripts under qemu-user.
    needs_binfmt_for_foreign_arch: bool = True

    @abstractmethod
    def bootstrap_tarball(self, request: BootstrapRequest, tarball: Path, runner: Runner) -> None:
        """Install request.packages into a fresh tree and write it as a tarball owned 0/0."""
