"""The one architecture table: one row per architecture holds every name and number the
stages need (docs/kata-contract.md, distributions), so a new architecture is one row plus recipe lines."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from osbuilder.foundation.elf import ElfHeader, parse_elf_header
from osbuilder.foundation.errors import lookup


@dataclass(frozen=True)
class QemuMachine:
    """How qemu-system boots a guest of this architecture."""

    binary: str  # qemu-system-*
    machine: str  # -M
    cpu: str | None  # -cpu, when the machine's default cannot run the distribution's kernels
    console: str  # the kernel's console= device for the first serial port
    disk_device: str  # qemu's virtio-blk device type on this machine's bus
    shim_device: str  # the boot shim's module set for that device (boot.modules.DEVICE_MODULES)
    disk_prefix: str  # the guest's name for the first disk
    nvdimm: bool  # the machine can take an NVDIMM
    kernel_params: str  # what the Kata runtime passes on this arch, for a production-like boot
    pvh: bool = False  # the kernel's ELF vmlinux can boot through the PVH entry (x86 only)


@dataclass(frozen=True)
class KernelSignature:
    """Bytes at a fixed offset that mark a raw (non-ELF) kernel image of this architecture."""

    offset: int
    magic: bytes


@dataclass(frozen=True)
class Arch:
    name: str  # `uname -m`
    debian: str
    rpm: str
    apk: str
    rust_target: str  # the agent's Rust target
    elf_class: int
    endianness: str  # "little" or "big"
    elf_machine: int
    qemu_user: str  # binfmt handler name, e.g. qemu-aarch64
    qemu: QemuMachine
    debian_kernel_flavour: str  # linux-image-<flavour>
    kernel_signature: KernelSignature | None  # raw kernel images; ELF kernels go by the ELF header
    kernel_config: tuple[str, ...] = ()  # options a kernel .config of this arch sets (all of them)

    def matches_elf(self, header: ElfHeader) -> bool:
        return (header.elf_class, header.endianness, header.machine) == (
            self.elf_class, self.endianness, self.elf_machine)


# The Kata runtime's own kernel parameters (its qemu_<arch>.go): they skip probing that
# a sandbox VM never needs, such as the PS/2 controller and the crypto self-tests.
_KATA_COMMON = "rcupdate.rcu_expedited=1 cryptomgr.notests net.ifnames=0"
_KATA_X86 = ("tsc=reliable no_timer_check i8042.direct=1 i8042.dumbkbd=1 i8042.nopnp=1 i8042.noaux=1 "
             "noreplace-smp reboot=k pci=lastbus=0 " + _KATA_COMMON)

ARCHES: dict[str, Arch] = {
    a.name: a
    for a in (
        Arch("x86_64", debian="amd64", rpm="x86_64", apk="x86_64", rust_target="x86_64-unknown-linux-musl",
             elf_class=64, endianness="little", elf_machine=62, qemu_user="qemu-x86_64",
             qemu=QemuMachine("qemu-system-x86_64", "q35", None, "ttyS0", "virtio-blk-pci", "virtio-blk",
                              "/dev/vda", True, _KATA_X86, pvh=True),
             debian_kernel_flavour="amd64", kernel_signature=KernelSignature(0x202, b"HdrS"),
             kernel_config=("CONFIG_X86_64",)),
        Arch("aarch64", debian="arm64", rpm="aarch64", apk="aarch64", rust_target="aarch64-unknown-linux-musl",
             elf_class=64, endianness="little", elf_machine=183, qemu_user="qemu-aarch64",
             qemu=QemuMachine("qemu-system-aarch64", "virt", "cortex-a57", "ttyAMA0", "virtio-blk-pci",
                              "virtio-blk", "/dev/vda", False, _KATA_COMMON),
             debian_kernel_flavour="arm64", kernel_signature=KernelSignature(0x38, b"ARM\x64"),
             kernel_config=("CONFIG_ARM64",)),
        Arch("ppc64le", debian="ppc64el", rpm="ppc64le", apk="ppc64le",
             rust_target="powerpc64le-unknown-linux-gnu", elf_class=64, endianness="little", elf_machine=21,
             qemu_user="qemu-ppc64le",
             qemu=QemuMachine("qemu-system-ppc64", "pseries", None, "hvc0", "virtio-blk-pci", "virtio-blk",
                              "/dev/vda", False, _KATA_COMMON),
             debian_kernel_flavour="powerpc64le", kernel_signature=None,
             kernel_config=("CONFIG_PPC64", "CONFIG_CPU_LITTLE_ENDIAN")),
        Arch("s390x", debian="s390x", rpm="s390x", apk="s390x", rust_target="s390x-unknown-linux-gnu",
             elf_class=64, endianness="big", elf_machine=22, qemu_user="qemu-s390x",
             qemu=QemuMachine("qemu-system-s390x", "s390-ccw-virtio", None, "ttysclp0", "virtio-blk-ccw",
                              "virtio-blk-ccw", "/dev/vda", False, _KATA_COMMON),
             debian_kernel_flavour="s390x", kernel_signature=None,
             kernel_config=("CONFIG_S390",)),
    )
}

# Names people type that mean one of the table's architectures (each row's other names).
ALIASES: dict[str, str] = {
    alias: arch.name for arch in ARCHES.values() for alias in (arch.debian, arch.rpm, arch.apk)
    if alias != arch.name
}


def canonical_arch_name(name: str) -> str:
    """The table's name for `name` (aliases allowed); unknown names are returned as given."""
    return ALIASES.get(name, name)


def arch_names() -> tuple[str, ...]:
    return tuple(ARCHES)


def get_arch(name: str) -> Arch:
    return lookup(ARCHES, canonical_arch_name(name), "arch")  # unknown names come back as given


def host_arch() -> Arch:
    return get_arch(platform.machine())


def arch_of_elf(header: ElfHeader | None) -> Arch | None:
    if header is None:
        return None
    return next((arch for arch in ARCHES.values() if arch.matches_elf(header)), None)


def describe_elf(header: ElfHeader) -> str:
    """A short name for an ELF's target: the table's arch, or its raw numbers."""
    arch = arch_of_elf(header)
    return arch.name if arch else f"ELF machine {header.machine} ({header.elf_class}-bit, {header.endianness} endian)"


def kernel_arch(kernel: Path) -> Arch | None:
    """The architecture a kernel file is built for: a raw image's boot header (x86's bzImage,
    arm64's Image), else its ELF header; None when neither says."""
    with open(kernel, "rb") as f:
        return kernel_arch_of_header(f.read(0x400))


def kernel_arch_of_header(head: bytes) -> Arch | None:
    """kernel_arch of a kernel file's first bytes (at least 0x400 of them)."""
    for arch in ARCHES.values():
        sig = arch.kernel_signature
        if sig is not None and head[sig.offset:sig.offset + len(sig.magic)] == sig.magic:
            return arch
    return arch_of_elf(parse_elf_header(head))


def arch_of_kernel_config(options: dict[str, str]) -> Arch | None:
    """The architecture a kernel .config is for (its options set to y)."""
    return next((arch for arch in ARCHES.values()
                 if arch.kernel_config and all(options.get(o) == "y" for o in arch.kernel_config)), None)
