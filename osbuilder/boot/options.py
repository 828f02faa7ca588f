"""`osbuilder boot`'s settings, apart from the session that runs them: the front end builds
every command's flags from these without importing qemu's harness."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from osbuilder.foundation.settings import as_path, setting
from osbuilder.foundation.shared_settings import (ArchSetting, ArtifactSetting, CacheDirSetting, ExtensionSetting,
                                                 HostCgroupDriverSetting)

DEVICES = ("virtio-blk", "nvdimm")
ACCELS = ("auto", "kvm", "tcg")


@dataclass(frozen=True)
class BootRequest(ArtifactSetting, ArchSetting, HostCgroupDriverSetting, CacheDirSetting, ExtensionSetting):
    required_settings: ClassVar[tuple[str, ...]] = ("artifact",)
    kernel: Path = setting(help="kernel file, a linux-image-*.deb (its kernel and modules), or 'debian': Debian's "
                           "current kernel package for the guest's arch, downloaded once into the cache",
                           metavar="VMLINUZ|DEB|debian", parse=as_path, required=True)
    modules: Path | None = setting(None, help="the kernel's lib/modules/<version> directory or linux-image-*.deb, "
                                   "for the boot shim that disk images need on stock kernels", metavar="DIR|DEB",
                                   parse=as_path)
    device: str | None = setting(None, help="how a disk image is attached (default: nvdimm with the DAX header, "
                                 "where the machine has NVDIMMs)", choices=lambda: DEVICES)
    append: str = setting("", help="more kernel parameters", metavar="ARGS")
    expect: str | None = setting(None, help="console text that means success (default: the probe's line, or the "
                                 "real agent's start-up line)", metavar="REGEX")
    timeout: float = setting(120.0, help="give up after S seconds (default: 120)", metavar="S", parse=float)
    accel: str = setting("auto", help="auto: KVM when a short probe shows it booting the kernel, else TCG",
                         choices=lambda: ACCELS)
    memory_mib: int = setting(1024, flag="--memory", help="guest RAM (default: 1024)", metavar="MiB", parse=int)
    pvh: bool = setting(True, help="boot an x86_64 bzImage's vmlinux through PVH (--no-pvh: the bzImage as is)",
                        boolean=True)
    console_log: Path | None = setting(None, help="write everything the console printed here", metavar="FILE",
                                       parse=as_path)
