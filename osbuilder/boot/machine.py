"""The qemu command line that boots an artifact. Everything arch-specific is data in the
architecture table (arch.py, each row's `qemu`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from osbuilder.foundation.arch import Arch
from osbuilder.pack.disk import round_up

GiB = 1 << 30



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
    extensions: tuple[tuple[str, Path], ...] = ()  # (serial, image): read-only virtio-blk disks after the root

    def argv(self) -> list[str]:
        machine = self.arch.qemu
        spec = machine.machine + (",nvdimm=on" if self.nvdimm else "")
        argv = [machine.binary, "-M", spec]
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
        for number, (serial, image) in enumerate(self.extensions):
            argv += ["-drive", f"file={str(image).replace(',', ',,')},if=none,id=ext{number},format=raw,readonly=on",
                     "-device", f"{machine.disk_device},drive=ext{number},serial={serial}"]
        return argv
