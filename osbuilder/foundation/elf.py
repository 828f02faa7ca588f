"""The ELF identification header, read directly: class, byte order, type and machine.

Reading the header itself (not libmagic's prose about it) is what decides which
architecture a binary or kernel is for."""

from __future__ import annotations

import mmap
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


PT_LOAD = 1
PT_DYNAMIC = 2
PT_INTERP = 3
DT_NULL = 0
DT_NEEDED = 1
DT_STRTAB = 5
DT_RPATH = 15
DT_RUNPATH = 29


@dataclass(frozen=True)
class DynamicInfo:
    interpreter: str | None  # PT_INTERP, e.g. /lib64/ld-linux-x86-64.so.2
    needed: tuple[str, ...]  # DT_NEEDED, in order
    search: tuple[str, ...]  # DT_RUNPATH (or DT_RPATH) entries, $ORIGIN unexpanded


def read_dynamic(data: bytes | mmap.mmap) -> DynamicInfo | None:
    """What a dynamically linked ELF needs at run time, read from its program headers and
    dynamic section (never by running it, or ldd on it). None for a static executable."""
    header = parse_elf_header(data[:20])
    if header is None:
        return None
    order = "<" if header.endianness == "little" else ">"
    wide = header.elf_class == 64
    if wide:
        phoff, = struct.unpack_from(order + "Q", data, 0x20)
        phentsize, phnum = struct.unpack_from(order + "HH", data, 0x36)
    else:
        phoff, = struct.unpack_from(order + "I", data, 0x1C)
        phentsize, phnum = struct.unpack_from(order + "HH", data, 0x2A)
    loads, interpreter, dynamic = [], None, None
    for i in range(phnum):
        at = phoff + i * phentsize
        if wide:
            p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(order + "IIQQQQ", data, at)
        else:
            p_type, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(order + "IIIII", data, at)
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == PT_INTERP:
            interpreter = data[p_offset:p_offset + p_filesz].split(b"\0")[0].decode(errors="replace")
        elif p_type == PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
    if dynamic is None:
        return None if interpreter is None else DynamicInfo(interpreter, (), ())
    entry = struct.Struct(order + ("qQ" if wide else "iI"))
    entries = []
    for at in range(dynamic[0], dynamic[0] + dynamic[1], entry.size):
        tag, value = entry.unpack_from(data, at)
        if tag == DT_NULL:
            break
        entries.append((tag, value))
    strtab_vaddr = next((v for t, v in entries if t == DT_STRTAB), None)
    strtab = next((off + strtab_vaddr - vaddr for vaddr, off, size in loads
                   if strtab_vaddr is not None and vaddr <= strtab_vaddr < vaddr + size), None)

    def string(index: int) -> str:
        if strtab is None:
            return ""
        end = data.find(b"\0", strtab + index)
        if end < 0:
            raise ValueError("an unterminated string in the dynamic string table")
        return data[strtab + index:end].decode(errors="replace")

    needed = tuple(string(v) for t, v in entries if t == DT_NEEDED)
    runpath = [string(v) for t, v in entries if t == DT_RUNPATH] or [string(v) for t, v in entries if t == DT_RPATH]
    search = tuple(p for paths in runpath for p in paths.split(":") if p)
    return DynamicInfo(interpreter, needed, search)
