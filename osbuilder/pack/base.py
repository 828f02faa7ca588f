"""The interface every packer implements (see registry.py)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from osbuilder.pack.artifact import Artifact, ArtifactInfo
from osbuilder.pack.gzip_pieces import PieceStore
from osbuilder.pack.guest_tree import GuestTree
from osbuilder.read.view import GuestView
from osbuilder.runner import Runner
from osbuilder.tools import HostTools


@dataclass(frozen=True)
class PackContext:
    runner: Runner
    tools: HostTools
    workdir: Path  # scratch space on the output's filesystem, removed afterwards
    pieces: PieceStore | None = None  # compressed initrd pieces kept by the build cache


class Packer(ABC):
    name: ClassVar[str]
    help: ClassVar[str]
    default_file_name: ClassVar[str]
    noun: ClassVar[str]  # what its artifacts are called in a sentence ("a disk image")
    Options: ClassVar[type]  # a frozen dataclass of settings

    def validate(self, options: Any) -> None:
        """Refuse bad options before any work starts."""

    @abstractmethod
    def pack(self, tree: GuestTree, out: Path, options: Any, context: PackContext) -> Artifact:
        """Write the artifact to `out` (a path the caller stages); the tree is only read."""

    def describe(self, artifact: Artifact) -> str:
        """The words after the size in the one-line report."""
        return ""

    @abstractmethod
    def recognise(self, path: Path, f: BinaryIO, size: int) -> ArtifactInfo | None:
        """What `path` is, when its bytes are this packer's format (f is open at its start)."""

    @abstractmethod
    def open_view(self, artifact: ArtifactInfo, workdir: Path, runner: Runner) -> GuestView:
        """The guest tree inside the artifact, read without mounting it."""
