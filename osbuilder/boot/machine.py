"""One qemu-system machine per target architecture, and the command line that boots an
artifact on it. Everything arch-specific is data in MACHINES."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from osbuilder.arch import Arch
from osbuilder.pack.disk import round_up

GiB = 1 << 30

# Mount options for a root on an NVDIMM with DAX (reference section 7 for ext4).
DAX_ROOTFLAGS = {"ext4": "dax,data=ordered,errors=remount-ro", "xfs": "dax", "erofs": "dax=always"}


@dataclass(frozen=True)
class Machine:
    machine: str  # -M
    cpu: str | None
    console: str  # the kernel's console= device for the first serial port
    disk_device: str  # qemu's virtio-blk device type on this machine's bus
    shim_device: str  # the boot shim's module set for that device (boot.modules.DEVICE_MODULES)
    disk_prefix: str  # the guest's name for the first disk
    nvdimm: bool  # the machine can take an NVDIMM
    kernel_params: str  # what the Kata runtime passes on this arch, for a production-like boot


# The Kata runtime's own kernel parameters (its qemu_<arch>.go): they skip probing that
# a sandbox VM never needs, such as the PS/2 controller and the crypto self-tests.
_KATA_COMMON = "rcupdate.rcu_expedited=1 cryptomgr.notests net.ifnames=0"
_KATA_X86 = ("tsc=reliable no_timer_check i8042.direct=1 i8042.dumbkbd=1 i8042.nopnp=1 i8042.noaux=1 "
             "noreplace-smp reboot=k pci=lastbus=0 " + _KATA_COMMON)

MACHINES: dict[str, Machine] = {
    "x86_64": Machine("q35", None, "ttyS0", "virtio-blk-pci", "virtio-blk", "/dev/vda", True, _KATA_X86),
    "aarch64": Machine("virt", "cortex-a57", "ttyAMA0", "virtio-blk-pci", "virtio-blk", "/dev/vda", False,
                       _KATA_COMMON),
    "ppc64le": Machine("pseries", None, "hvc0", "virtio-blk-pci", "virtio-blk", "/dev/vda", False, _KATA_COMMON),
    "s390x": Machine("s390-ccw-virtio", None, "ttysclp0", "virtio-blk-ccw", "virtio-blk-ccw", "/dev/vda", False,
                     _KATA_COMMON),
}


@dataclass(frozen=True)
class QemuPlan:
    """Everything that goes on one qemu command line."""

    arch: Arch
    accel: str  # "kvm" or "tcg"
    kernel: Path
    cmdline: str
    memory_mib: int
    initrd: Path | None = None
    disk: Path | None = None  # on virtio-blk, read-only
    nvdimm: Path | None = None  # as an NVDIMM backed by the file, copy-on-write

    def argv(self) -> list[str]:
        machine = MACHINES[self.arch.name]
        spec = machine.machine + (",nvdimm=on" if self.nvdimm else "")
        argv = [self.arch.qemu_system, "-M", spec]
        if machine.cpu:
            argv += ["-cpu", machine.cpu]
        argv += ["-accel", self.accel, "-smp", "1", "-nodefaults", "-no-reboot", "-display", "none",
                 "-serial", "stdio", "-kernel", str(self.kernel), "-append", self.cmdline]
        if self.nvdimm is not None:
            size = self.nvdimm.stat().st_size
            maxmem = self.memory_mib * (1 << 20) + round_up(size, GiB) + GiB
            argv += ["-m", f"{self.memory_mib}M,slots=2,maxmem={maxmem // (1 << 20)}M",
                     "-object", f"memory-backend-file,id=mem1,share=off,mem-path={self.nvdimm},size={size}",
                     "-device", "nvdimm,id=nv1,memdev=mem1"]
        else:
            argv += ["-m", f"{self.memory_mib}M"]
        if self.initrd is not None:
            argv += ["-initrd", str(self.initrd)]
        if self.disk is not None:
            argv += ["-drive", f"file={self.disk},if=none,id=root,format=raw,readonly=on",
                     "-device", f"{machine.disk_device},drive=root"]
        return argv
