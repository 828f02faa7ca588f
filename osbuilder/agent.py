"""The agent binary: where it comes from and whether it fits the target."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import magic

from osbuilder.arch import Arch, arch_of_magic
from osbuilder.errors import UserError


@dataclass(frozen=True)
class AgentBinary:
    path: Path
    sha256: str
    description: str  # libmagic's words for it
    probe: bool = False  # osbuilder's probe agent (osbuilder.probe), not a real agent


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe(path: Path) -> str:
    return magic.from_file(str(path))


def check_agent(path: Path, target: Arch) -> AgentBinary:
    """Refuse an agent that is missing, not an ELF executable, or built for another arch."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"agent file '{path}' does not exist", "pass --agent the path of the agent executable")
    description = describe(path)
    if not description.startswith("ELF") or not ("executable" in description or "shared object" in description):
        raise UserError(f"agent '{path}' is not an ELF executable ({description.split(',')[0]})",
                        "pass the compiled agent binary, not a script or archive")
    if not target.matches_magic(description):
        found = arch_of_magic(description) or description.split(",")[1].strip()
        raise UserError(f"agent is {found}, target is {target.name}",
                        f"pass an agent built for {target.rust_target} or use --arch {found}")
    return AgentBinary(path=path, sha256=sha256_file(path), description=description)
