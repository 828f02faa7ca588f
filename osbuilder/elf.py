"""The ELF identification header, read directly: class, byte order, type and machine.

Reading the header itself (not libmagic's prose about it) is what decides which
architecture a binary or kernel is for."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

ELF_MAGIC = b"\x7fELF"
ET_EXEC = 2
ET_DYN = 3


@dataclass(frozen=True)
class ElfHeader:
    elf_class: int  # 32 or 64
    endianness: str  # "little" or "big"
    file_type: int  # e_type: ET_EXEC, ET_DYN, ...
    machine: int  # e_machine

    @property
    def executable(self) -> bool:
        """Something the kernel can exec: a static executable or a (PIE) shared object."""
        return self.file_type in (ET_EXEC, ET_DYN)


def parse_elf_header(head: bytes) -> ElfHeader | None:
    """The header of an ELF file from its first 20 bytes, or None if it is no ELF."""
    if len(head) < 20 or not head.startswith(ELF_MAGIC):
        return None
    elf_class = {1: 32, 2: 64}.get(head[4])
    endianness = {1: "little", 2: "big"}.get(head[5])
    if elf_class is None or endianness is None:
        return None
    order = "<" if endianness == "little" else ">"
    file_type, machine = struct.unpack_from(order + "HH", head, 16)
    return ElfHeader(elf_class, endianness, file_type, machine)


def read_elf_header(path: Path) -> ElfHeader | None:
    with open(path, "rb") as f:
        return parse_elf_header(f.read(20))
