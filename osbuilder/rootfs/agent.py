"""The agent binary: where it comes from and whether it fits the target."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import magic

from osbuilder.arch import Arch, describe_elf
from osbuilder.elf import read_elf_header
from osbuilder.errors import UserError
from osbuilder.fsutil import sha256_file


@dataclass(frozen=True)
class AgentBinary:
    path: Path
    sha256: str
    description: str  # what the file is, for people
    probe: bool = False  # osbuilder's probe agent (rootfs.probe), not a real agent


def check_agent(path: Path, target: Arch) -> AgentBinary:
    """Refuse an agent that is missing, not an ELF executable, or built for another arch."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"agent file '{path}' does not exist", "pass --agent the path of the agent executable")
    header = read_elf_header(path)
    if header is None or not header.executable:
        # libmagic is for naming what the file is instead; the decision is the header's.
        what = magic.from_file(str(path)).split(",")[0]
        raise UserError(f"agent '{path}' is not an ELF executable ({what})",
                        "pass the compiled agent binary, not a script or archive")
    if not target.matches_elf(header):
        found = describe_elf(header)
        raise UserError(f"agent is {found}, target is {target.name}",
                        f"pass an agent built for {target.rust_target} or use --arch {found}")
    return AgentBinary(path=path, sha256=sha256_file(path), description=f"ELF executable for {target.name}")
