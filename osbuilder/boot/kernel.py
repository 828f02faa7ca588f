"""The kernel a boot uses: a kernel file or a Debian linux-image package, its modules, and
(for x86_64) the uncompressed vmlinux that boots through PVH.

Under TCG, decompressing a bzImage costs seconds of emulated CPU; the same kernel's ELF
vmlinux with a PVH entry note skips the decompressor and the real-mode setup. osbuilder
extracts it once per kernel (keyed by the bzImage's sha256) and boots that instead.
"""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import magic

from osbuilder.foundation.arch import Arch, kernel_arch_of_header
from osbuilder.foundation.documents import require_file
from osbuilder.foundation.errors import UserError
from osbuilder.foundation.fsutil import sha256_file
from osbuilder.foundation.runner import FILESYSTEM, Runner

# Xen's ELF note type for the 32-bit PVH entry point (include/xen/interface/elfnote.h).
XEN_ELFNOTE_PHYS32_ENTRY = 18
PT_NOTE = 4


@dataclass(frozen=True)
class Kernel:
    image: Path  # what qemu's -kernel gets
    arch: Arch
    modules: Path | None  # lib/modules/<version>, when known
    pvh: bool  # image is a vmlinux with a PVH entry


def is_deb(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"!<arch>\n"


def unpack_deb(deb: Path, into: Path, runner: Runner) -> Path:
    """Unpack a linux-image .deb (once) and return the directory it was unpacked into."""
    if (into / ".unpacked").exists():
        return into
    shutil.rmtree(into, ignore_errors=True)
    partial = into.with_name(into.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    runner.run(["dpkg-deb", "--extract", str(deb), str(partial)], hint="pass a linux-image-*.deb package", limit=FILESYSTEM)
    (partial / ".unpacked").touch()
    os.replace(partial, into)
    return into


def kernel_from_deb(deb: Path, cache: Path, runner: Runner) -> tuple[Path, Path]:
    """The kernel image and lib/modules/<version> inside a linux-image package."""
    tree = unpack_deb(deb, cache / "debs" / sha256_file(deb)[:16], runner)
    kernels = sorted((tree / "boot").glob("vmlinu[xz]-*"))
    module_dirs = sorted(p for p in (tree / "lib/modules").glob("*") if p.is_dir()) if (tree / "lib/modules").is_dir() else []
    if not kernels or not module_dirs:
        raise UserError(f"'{deb}' holds no /boot/vmlinuz-* and /lib/modules/<version>",
                        "pass a linux-image-<version>-<arch> package")
    return kernels[0], module_dirs[0]


def modules_from(path: Path, cache: Path, runner: Runner) -> Path:
    """--modules: a lib/modules/<version> directory, or a linux-image .deb that has one."""
    if path.is_dir():
        if not (path / "kernel").is_dir():
            raise UserError(f"modules directory '{path}' has no kernel/ subdirectory",
                            "pass /lib/modules/<version> of the kernel you boot")
        return path
    if path.is_file() and is_deb(path):
        return kernel_from_deb(path, cache, runner)[1]
    raise UserError(f"modules '{path}' is neither a directory nor a .deb package",
                    "pass --modules /lib/modules/<version> or a linux-image-*.deb")


def load_kernel(kernel: Path, modules: Path | None, arch: Arch, cache: Path, runner: Runner,
                pvh: bool = True) -> Kernel:
    kernel = require_file(kernel, "kernel", "pass --kernel a vmlinuz file or a linux-image-*.deb")
    module_dir = modules_from(Path(modules), cache, runner) if modules is not None else None
    if is_deb(kernel):
        kernel, deb_modules = kernel_from_deb(kernel, cache, runner)
        module_dir = module_dir or deb_modules
    problem = kernel_problem(kernel)
    if problem is not None:
        raise UserError(f"kernel '{kernel}' is not a kernel: {problem}",
                        "pass --kernel a vmlinuz or vmlinux file, a linux-image-*.deb, or debian")
    if arch.qemu.pvh and pvh and is_bzimage(kernel):
        return Kernel(image=pvh_vmlinux(kernel, cache), arch=arch, modules=module_dir, pvh=True)
    return Kernel(image=kernel, arch=arch, modules=module_dir, pvh=arch.qemu.pvh and has_pvh_note(kernel))


# What libmagic calls the kernel images no boot header of ours names (s390's, among others).
KERNEL_DESCRIPTIONS = ("Linux kernel", "Linux S390")


def kernel_problem(path: Path) -> str | None:
    """Why a file is no kernel qemu could boot, or None: refused before qemu starts, where it
    would only time out. A kernel has a boot header or an ELF header, possibly under gzip
    (arm64's vmlinuz), or is one libmagic knows as a Linux kernel."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if head.startswith(b"\x1f\x8b"):
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 0x400)
        except zlib.error:
            return "its gzip data is damaged"
    if kernel_arch_of_header(head) is not None:
        return None
    description = magic.from_buffer(head)
    if any(words in description for words in KERNEL_DESCRIPTIONS):
        return None
    return f"it is {description or 'empty'}" if len(head) else "it is empty"


def is_bzimage(path: Path) -> bool:
    with open(path, "rb") as f:
        header = f.read(0x210)
    return len(header) >= 0x206 and header[0x202:0x206] == b"HdrS"


_DECOMPRESSORS = (
    (b"\x1f\x8b", lambda data: gzip.decompress(data)),
    (b"\xfd7zXZ\x00", lambda data: lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(data)),
    (b"\x5d\x00\x00", lambda data: lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(data)),
)


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF vmlinux inside an x86 bzImage (boot protocol >= 2.08: payload_offset/length)."""
    if len(bzimage) < 0x250:
        raise UserError(f"the bzImage is truncated ({len(bzimage)} bytes)", "copy the whole kernel file again")
    setup_sects = bzimage[0x1F1] or 4
    version = struct.unpack_from("<H", bzimage, 0x206)[0]
    if version < 0x208:
        raise UserError(f"bzImage boot protocol {version >> 8}.{version & 0xff} has no payload fields",
                        "use a kernel from the last decade, or --no-pvh")
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + offset
    payload = bzimage[start:start + length]
    if len(payload) < length:
        raise UserError(f"the bzImage is truncated: its payload needs {start + length} bytes, the file has "
                        f"{len(bzimage)}", "copy the whole kernel file again")
    for magic, decompress in _DECOMPRESSORS:
        if payload.startswith(magic):
            try:
                vmlinux = decompress(payload)
            except (EOFError, OSError, lzma.LZMAError, zlib.error) as exc:
                raise UserError(f"the bzImage payload is damaged ({exc})", "copy the whole kernel file again") from None
            break
    else:
        raise UserError(f"bzImage payload compression {payload[:6].hex()} is not supported for PVH extraction",
                        "pass --no-pvh to boot the bzImage itself")
    if not vmlinux.startswith(b"\x7fELF"):
        raise UserError("the bzImage payload is not an ELF vmlinux", "pass --no-pvh to boot the bzImage itself")
    return vmlinux


def has_pvh_note(path: Path) -> bool:
    with open(path, "rb") as f:
        return _elf_has_pvh_note(f.read())


def _elf_has_pvh_note(elf: bytes) -> bool:
    if not elf.startswith(b"\x7fELF") or elf[4] != 2:  # ELFCLASS64 only
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
        if p_type != PT_NOTE:
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, note_type = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and note_type == XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            pos += 12 + (namesz + 3 & ~3) + (descsz + 3 & ~3)
    return False


def pvh_vmlinux(bzimage: Path, cache: Path) -> Path:
    """The PVH-bootable vmlinux of `bzimage`, extracted once into the cache."""
    target = cache / "vmlinux" / f"{sha256_file(bzimage)[:16]}.vmlinux"
    if target.exists():
        return target
    vmlinux = extract_vmlinux(bzimage.read_bytes())
    if not _elf_has_pvh_note(vmlinux):
        raise UserError(f"kernel '{bzimage}' has no PVH entry (CONFIG_PVH is off)",
                        "pass --no-pvh to boot the bzImage itself")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    partial.write_bytes(vmlinux)
    os.replace(partial, target)
    return target
