"""`osbuilder boot`: start qemu-system on an artifact, watch the serial console, decide.

Success is the expected line on the console. Failure is a kernel panic, the boot shim's
error line, a guest that powers off without the line, or the timeout; qemu is killed at
the timeout at the latest, so a boot never hangs.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import magic

from osbuilder.arch import Arch, arch_of_magic, get_arch, host_arch
from osbuilder.boot.debian_archive import DebianArchive
from osbuilder.boot.artifact import BootArtifact, inspect_artifact, verity_params_for
from osbuilder.boot.kernel import Kernel, is_bzimage, is_deb, load_kernel
from osbuilder.boot.machine import DAX_ROOTFLAGS, MACHINES, QemuPlan
from osbuilder.boot.shim import SHIM_ERROR, ShimRequest, build_shim
from osbuilder.boot.summary_reader import read_artifact_summary
from osbuilder.errors import UserError
from osbuilder.probe import PROBE_ERROR_MARKER, PROBE_MARKER, PROBE_PATTERN, parse_probe_line
from osbuilder.runner import Runner
from osbuilder.templates import Templates

log = logging.getLogger("osbuilder")

# The real kata-agent's first log line: a JSON record whose message is "announce".
KATA_AGENT_STARTUP = r'"msg":"announce"'
# --kernel debian: Debian's current linux-image package for the guest's arch, fetched into the cache.
DEBIAN_KERNEL = "debian"
PANIC = re.compile(r"Kernel panic - not syncing[^\n]*")
CONSOLE_TAIL_LINES = 40
KVM_PROBE_SECONDS = 8.0
HOST_CGROUP_DRIVERS = ("systemd", "cgroupfs")


@dataclass(frozen=True)
class BootRequest:
    artifact: Path
    kernel: Path
    modules: Path | None = None
    arch: str | None = None
    device: str | None = None  # "virtio-blk" or "nvdimm"; default: nvdimm for a DAX image where possible
    append: str = ""
    expect: str | None = None
    timeout: float = 120.0
    accel: str = "auto"
    memory_mib: int = 1024
    pvh: bool = True
    host_cgroup_driver: str | None = None
    cache_dir: Path | None = None


@dataclass
class BootResult:
    ok: bool
    outcome: str  # "matched", "timeout", "panic", "shim-error", "powered-off", "init-mode-mismatch"
    reason: str
    seconds: float
    accel: str
    kernel: str
    pvh: bool
    device: str | None
    expect: str
    probe: dict[str, Any] | None = None
    recorded_init_mode: str | None = None
    console_tail: str = ""
    command: list[str] = field(default_factory=list)
    console: str = ""  # everything the serial console printed

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "outcome": self.outcome, "reason": self.reason, "boot_seconds": round(self.seconds, 3),
                "accel": self.accel, "kernel": self.kernel, "pvh": self.pvh, "device": self.device,
                "expect": self.expect, "probe": self.probe, "recorded_init_mode": self.recorded_init_mode,
                "console_tail": self.console_tail if not self.ok else "", "command": self.command}


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "osbuilder"


def kernel_arch(kernel: Path) -> Arch | None:
    """The architecture a kernel file is built for: the bzImage header is x86's own, the
    arm64 Image header carries "ARM\\x64" at 0x38; ELF kernels go by libmagic."""
    if is_bzimage(kernel):
        return get_arch("x86_64")
    with open(kernel, "rb") as f:
        head = f.read(0x40)
    if head[0x38:0x3C] == b"ARM\x64":
        return get_arch("aarch64")
    name = arch_of_magic(magic.from_file(str(kernel)))
    return get_arch(name) if name else None


def _choose_arch(request: BootRequest, summary: dict[str, Any] | None) -> Arch:
    recorded = (summary or {}).get("architecture")
    if request.arch:
        arch = get_arch(request.arch)
        if recorded and get_arch(recorded) != arch:
            raise UserError(f"the artifact is for {recorded}, not {arch.name}", f"drop --arch or pass --arch {recorded}")
        return arch
    if recorded:
        return get_arch(recorded)
    kernel = Path(request.kernel)
    if kernel.is_file() and not is_deb(kernel):
        found = kernel_arch(kernel)
        if found:
            return found
    return host_arch()


def _default_expect(summary: dict[str, Any] | None) -> str:
    agent = (summary or {}).get("agent") or {}
    if agent.get("probe") == "yes":
        return PROBE_PATTERN
    if summary is not None:
        return KATA_AGENT_STARTUP
    return f"{PROBE_PATTERN}|{KATA_AGENT_STARTUP}"


def _choose_device(request: BootRequest, artifact: BootArtifact, arch: Arch) -> str | None:
    if artifact.kind == "initrd":
        if request.device:
            raise UserError("--device applies to disk images, not to an initrd", "drop --device")
        return None
    machine = MACHINES[arch.name]
    device = request.device or ("nvdimm" if artifact.dax and machine.nvdimm else "virtio-blk")
    if device == "nvdimm":
        if artifact.kind != "disk" or not artifact.dax:
            raise UserError(f"'{artifact.path}' has no NVDIMM/DAX header, so it cannot boot as an NVDIMM",
                            "use --device virtio-blk, or rebuild the image without --no-dax")
        if not machine.nvdimm:
            raise UserError(f"osbuilder boots NVDIMMs only on x86_64, not {arch.name}", "use --device virtio-blk")
    return device


def probe_kvm(arch: Arch, kernel: Kernel, runner: Runner) -> bool:
    """Whether KVM really runs this kernel: a few seconds of boot must print its banner.
    Some hosts expose a /dev/kvm that cannot boot stock kernels (reference section 10)."""
    if arch != host_arch() or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    plan = QemuPlan(arch=arch, accel="kvm", kernel=kernel.image, memory_mib=256,
                    cmdline=f"console={MACHINES[arch.name].console} panic=-1")
    watched = runner.watch(plan.argv(), lambda out: "Linux version" in out, timeout=KVM_PROBE_SECONDS)
    log.info("KVM probe: %s", "the guest makes progress" if watched.outcome == "matched" else "no progress; using TCG")
    return watched.outcome == "matched"


def boot_artifact(request: BootRequest, runner: Runner, templates: Templates) -> BootResult:
    artifact = inspect_artifact(request.artifact)
    if request.timeout <= 0:
        raise UserError(f"--timeout must be positive (got {request.timeout})", "pass the seconds to wait, e.g. --timeout 120")
    if request.host_cgroup_driver and request.host_cgroup_driver not in HOST_CGROUP_DRIVERS:
        raise UserError(f"unknown host cgroup driver '{request.host_cgroup_driver}'",
                        f"use {' or '.join(HOST_CGROUP_DRIVERS)}")
    if request.expect is not None:
        try:
            re.compile(request.expect)
        except re.error as exc:
            raise UserError(f"--expect is not a valid regular expression ({exc})", "quote it, or escape special characters") from None
    with tempfile.TemporaryDirectory(prefix="osbuilder-boot-") as tmp:
        work = Path(tmp)
        debian_kernel = str(request.kernel) == DEBIAN_KERNEL
        cache = Path(request.cache_dir) if request.cache_dir else default_cache_dir() if debian_kernel else work / "cache"
        summary = read_artifact_summary(artifact, work, runner)
        arch = _choose_arch(request, summary)
        device = _choose_device(request, artifact, arch)
        kernel_file = DebianArchive(arch, cache).kernel_package(runner) if debian_kernel else Path(request.kernel)
        kernel = load_kernel(kernel_file, request.modules, arch, cache, runner, pvh=request.pvh)
        found = kernel_arch(kernel.image)
        if found is not None and found != arch:
            raise UserError(f"kernel '{request.kernel}' is for {found.name}, the artifact for {arch.name}",
                            f"pass a {arch.name} kernel")
        machine = MACHINES[arch.name]
        params = [f"console={machine.console}", "panic=-1", machine.kernel_params]
        plan_files: dict[str, Path] = {}
        if artifact.kind == "initrd":
            plan_files["initrd"] = artifact.path
        else:
            if kernel.modules is None:
                raise UserError("booting a disk image on a stock kernel needs its modules for the boot shim",
                                "pass --modules /lib/modules/<version> or a linux-image-*.deb (or --kernel the .deb)")
            shim = work / "shim.img"
            build_shim(ShimRequest(arch, kernel.modules, "nvdimm" if device == "nvdimm" else machine.shim_device,
                                   artifact.fs or "ext4", artifact.verity), shim, work, cache, templates, runner)
            plan_files["initrd"] = shim
            plan_files["nvdimm" if device == "nvdimm" else "disk"] = artifact.path
            params += _root_params(artifact, device == "nvdimm", machine.disk_prefix)
        if request.host_cgroup_driver:
            params.append(f"osbuilder.host_cgroup_driver={request.host_cgroup_driver}")
        if request.append:
            params.append(request.append)
        accel = request.accel
        if accel == "auto":
            accel = "kvm" if probe_kvm(arch, kernel, runner) else "tcg"
        plan = QemuPlan(arch=arch, accel=accel, kernel=kernel.image, cmdline=" ".join(params),
                        memory_mib=request.memory_mib, **plan_files)
        expect = request.expect or _default_expect(summary)
        return _watch(plan, expect, request.timeout, summary, device, kernel, runner)


def _root_params(artifact: BootArtifact, nvdimm: bool, disk_prefix: str) -> list[str]:
    """The boot shim's kernel parameters: the root device, its file system and mount
    options, and the dm-verity table's inputs when the image has a hash partition."""
    disk = "/dev/pmem0" if nvdimm else disk_prefix

    def partition(number: int) -> str:
        return f"{disk}p{number}" if nvdimm else f"{disk}{number}"

    fs = artifact.fs or "ext4"
    params = [f"root={disk if artifact.kind == 'iso' else partition(1)}", f"rootfstype={fs}"]
    if nvdimm:
        flags = DAX_ROOTFLAGS[fs].split(",")
        if artifact.verity:  # dm-verity devices cannot do DAX; the other options stay
            flags = [f for f in flags if not f.startswith("dax")]
        if flags:
            params.append("rootflags=" + ",".join(flags))
    if artifact.verity:
        params += [f"osbuilder.verity={verity_params_for(artifact)}", f"osbuilder.verity_hash={partition(2)}"]
    return params


def _watch(plan: QemuPlan, expect: str, timeout: float, summary: dict[str, Any] | None, device: str | None,
           kernel: Kernel, runner: Runner) -> BootResult:
    expected = re.compile(expect)

    def decided(console: str) -> bool:
        return bool(expected.search(console) or PANIC.search(console) or SHIM_ERROR in console
                    or PROBE_ERROR_MARKER in console)

    # After the line, give the guest a moment to power off by itself (the probe does).
    watched = runner.watch(plan.argv(), decided, timeout=timeout, linger=5.0)
    console = watched.output.replace("\r\n", "\n")
    recorded = ((summary or {}).get("agent") or {}).get("init-mode")
    result = BootResult(ok=False, outcome="", reason="", seconds=watched.matched_after or watched.elapsed,
                        accel=plan.accel, kernel=str(plan.kernel), pvh=kernel.pvh, device=device, expect=expect,
                        recorded_init_mode=recorded, command=watched.argv, console=console,
                        console_tail="\n".join(console.splitlines()[-CONSOLE_TAIL_LINES:]))
    match = expected.search(console)
    panic = PANIC.search(console)
    if match and not (panic and panic.start() < match.start()):
        line = console[match.start():].split("\n", 1)[0]
        result.probe = parse_probe_line(line) if PROBE_MARKER in line else None
        if result.probe and recorded and result.probe.get("init_mode") != (recorded == "agent"):
            result.outcome = "init-mode-mismatch"
            result.reason = (f"the image records init mode '{recorded}' but the guest reports "
                             f"init_mode={str(result.probe.get('init_mode')).lower()}")
            return result
        result.ok, result.outcome, result.reason = True, "matched", f"'{expect}' appeared"
        return result
    if panic:
        result.outcome, result.reason = "panic", panic.group(0).strip()
    elif SHIM_ERROR in console or PROBE_ERROR_MARKER in console:
        marker = SHIM_ERROR if SHIM_ERROR in console else PROBE_ERROR_MARKER
        line = console[console.index(marker):].split("\n", 1)[0]
        result.outcome = "shim-error" if marker == SHIM_ERROR else "probe-error"
        result.reason = line.strip()
    elif watched.outcome == "exited":
        result.outcome = "powered-off"
        result.reason = f"the guest stopped (qemu exit {watched.returncode}) without printing '{expect}'"
    else:
        result.outcome, result.reason = "timeout", f"'{expect}' did not appear within {timeout:g} s"
    return result
