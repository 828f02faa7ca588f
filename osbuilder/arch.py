"""The one architecture table (reference section 5) and lookups into it."""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass

from osbuilder.errors import UserError


@dataclass(frozen=True)
class Arch:
    name: str  # `uname -m`
    debian: str
    rust_target: str
    elf_machine: int
    endianness: str  # "little" or "big"
    magic_pattern: str  # regex matched against libmagic's description of an executable
    qemu_user: str  # binfmt handler name, e.g. qemu-aarch64
    qemu_system: str
    qemu_machine: str

    def matches_magic(self, description: str) -> bool:
        return re.search(self.magic_pattern, description) is not None


ARCHES: dict[str, Arch] = {
    a.name: a
    for a in (
        Arch("x86_64", "amd64", "x86_64-unknown-linux-musl", 62, "little",
             r"^ELF 64-bit LSB .*x86-64", "qemu-x86_64", "qemu-system-x86_64", "q35"),
        Arch("aarch64", "arm64", "aarch64-unknown-linux-musl", 183, "little",
             r"^ELF 64-bit LSB .*ARM aarch64", "qemu-aarch64", "qemu-system-aarch64", "virt"),
        Arch("ppc64le", "ppc64el", "powerpc64le-unknown-linux-gnu", 21, "little",
             r"^ELF 64-bit LSB .*PowerPC", "qemu-ppc64le", "qemu-system-ppc64", "pseries"),
        Arch("s390x", "s390x", "s390x-unknown-linux-gnu", 22, "big",
             r"^ELF 64-bit MSB .*IBM S/390", "qemu-s390x", "qemu-system-s390x", "s390-ccw-virtio"),
    )
}

# Names people type that mean one of the table's architectures.
_ALIASES = {"amd64": "x86_64", "arm64": "aarch64", "ppc64el": "ppc64le"}


def get_arch(name: str) -> Arch:
    canonical = _ALIASES.get(name, name)
    try:
        return ARCHES[canonical]
    except KeyError:
        raise UserError(f"unknown arch '{name}'", f"use one of: {', '.join(ARCHES)}") from None


def host_arch() -> Arch:
    return get_arch(platform.machine())


def arch_of_magic(description: str) -> str | None:
    """The table's name for the architecture libmagic describes, or None."""
    for arch in ARCHES.values():
        if arch.matches_magic(description):
            return arch.name
    return None
