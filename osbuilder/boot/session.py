"""`osbuilder boot`: start qemu-system on an artifact, watch the serial console, decide.

Success is the expected line on the console. Failure is a kernel panic, the boot shim's
error line, a guest that powers off without the line, or the timeout; qemu is killed at
the timeout at the latest, so a boot never hangs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osbuilder.foundation.arch import Arch, get_arch, host_arch, kernel_arch
from osbuilder.boot.debian_archive import DebianArchive
from osbuilder.boot.kernel import Kernel, is_deb, load_kernel
from osbuilder.boot.machine import QemuPlan
from osbuilder.boot.shim import SHIM_ERROR, ShimRequest, build_shim
from osbuilder.foundation.cache import default_cache_dir
from osbuilder.foundation.errors import UserError
from osbuilder.foundation.fsutil import sha256_file, write_atomically
from osbuilder.rootfs.initmode import INIT_MODES
from osbuilder.pack.fs import FILESYSTEMS
from osbuilder.pack.artifact import ROOTFS_KIND, ArtifactInfo
from osbuilder.pack.base import BOOTS_AS_INITRD
from osbuilder.boot.modules import DEVICE_MODULES
from osbuilder.read.extension import read_extension
from osbuilder.read.summary import open_view
from osbuilder.rootfs.extension_mount import (EXTENSION_ERROR_MARKER, KERNEL_MODULES as EXTENSION_KERNEL_MODULES,
                                              UNIT_PREFIX, kernel_param, mount_support, parse_extension_images, serial)
from osbuilder.pack.registry import get_packer
from osbuilder.read.kind import recognise_artifact, verity_params_for
from osbuilder.read.summary import read_artifact_summary
from osbuilder.rootfs.probe import PROBE_ERROR_MARKER, PROBE_MARKER, PROBE_PATTERN, parse_probe_line
from osbuilder.rootfs.summary import recorded_agent
from osbuilder.foundation.runner import Runner
from osbuilder.foundation.templates import Templates
from osbuilder.boot.options import BootRequest

log = logging.getLogger("osbuilder")

# The real kata-agent's first log line: a JSON record whose message is "announce".
KATA_AGENT_STARTUP = r'"msg":"announce"'
# --kernel debian: Debian's current linux-image package for the guest's arch, fetched into the cache.
DEBIAN_KERNEL = "debian"
PANIC = re.compile(r"Kernel panic - not syncing[^\n]*")
CONSOLE_TAIL_LINES = 40
KVM_PROBE_SECONDS = 8.0


@dataclass
class BootResult:
    ok: bool
    outcome: str  # "matched", "timeout", "panic", "shim-error", "extension-error", "powered-off", "init-mode-mismatch"
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
    extensions: list[dict[str, Any]] = field(default_factory=list)  # what was attached

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "outcome": self.outcome, "reason": self.reason, "boot_seconds": round(self.seconds, 3),
                "accel": self.accel, "kernel": self.kernel, "pvh": self.pvh, "device": self.device,
                "expect": self.expect, "probe": self.probe, "recorded_init_mode": self.recorded_init_mode,
                "console_tail": self.console_tail if not self.ok else "", "command": self.command,
                "extensions": self.extensions}


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
    if recorded_agent(summary).get("probe") == "yes":
        return PROBE_PATTERN
    if summary is not None:
        return KATA_AGENT_STARTUP
    return f"{PROBE_PATTERN}|{KATA_AGENT_STARTUP}"


def _choose_device(request: BootRequest, artifact: ArtifactInfo, arch: Arch) -> str | None:
    if get_packer(artifact.kind).boots_as == BOOTS_AS_INITRD:
        if request.device:
            raise UserError("--device applies to disk images, not to an initrd", "drop --device")
        return None
    machine = arch.qemu
    device = request.device or ("nvdimm" if artifact.dax and machine.nvdimm else "virtio-blk")
    if device == "nvdimm":
        if not artifact.dax:
            raise UserError(f"'{artifact.path}' has no NVDIMM/DAX header, so it cannot boot as an NVDIMM",
                            "use --device virtio-blk, or rebuild the image without --no-dax")
        if not machine.nvdimm:
            raise UserError(f"osbuilder boots NVDIMMs only on x86_64, not {arch.name}", "use --device virtio-blk")
    return device


def probe_kvm(arch: Arch, kernel: Kernel, runner: Runner) -> bool:
    """Whether KVM really runs this kernel: a few seconds of boot must print its banner.
    Some hosts expose a /dev/kvm that cannot boot stock kernels (docs/kata-contract.md, measured facts)."""
    if arch != host_arch() or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    plan = QemuPlan(arch=arch, accel="kvm", kernel=kernel.image, memory_mib=256,
                    cmdline=f"console={arch.qemu.console} panic=-1")
    progressing = shows_kernel_progress(plan.argv(), runner)
    log.info("KVM probe: %s", "the guest makes progress" if progressing else "no progress; using TCG")
    return progressing


KVM_VERDICTS = "kvm-probe"  # below the cache directory: one small JSON file per kernel and host


def kvm_verdict_key(kernel: Path) -> dict[str, str]:
    """What a KVM probe's verdict depends on: the kernel's bytes and this host (its name, its
    kernel, its CPU, qemu's build). Any change asks again."""
    cpu = ""
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith(("model name", "cpu model"))), "")
    qemu = shutil.which(host_arch().qemu.binary) or ""
    stamp = f"{os.stat(qemu).st_size}:{os.stat(qemu).st_mtime_ns}" if qemu else ""
    return {"kernel_sha256": sha256_file(kernel), "host": socket.gethostname(), "host_kernel": os.uname().release,
            "cpu": cpu, "qemu": f"{qemu}:{stamp}"}


def remembered_kvm_probe(arch: Arch, kernel: Kernel, runner: Runner, cache: Path) -> bool:
    """probe_kvm, its verdict kept in the cache per kernel and host: on a host whose /dev/kvm
    cannot boot stock kernels the probe costs its full seconds on every boot otherwise."""
    if arch != host_arch() or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    key = kvm_verdict_key(kernel.image)
    path = cache / KVM_VERDICTS / f"{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]}.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        recorded = json.loads(path.read_text())
        if recorded["key"] == key and isinstance(recorded["kvm"], bool):
            log.info("KVM probe: remembered for this kernel and host (%s)",
                     "KVM boots it" if recorded["kvm"] else "no progress; using TCG")
            return recorded["kvm"]
    verdict = probe_kvm(arch, kernel, runner)
    with contextlib.suppress(OSError):  # a cache that cannot be written only costs the next probe
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, (json.dumps({"key": key, "kvm": verdict}, indent=2) + "\n").encode())
    return verdict


def shows_kernel_progress(argv: list[str], runner: Runner, seconds: float = KVM_PROBE_SECONDS) -> bool:
    """Whether the machine `argv` starts prints the kernel's banner within `seconds`."""
    return runner.watch(argv, lambda out: "Linux version" in out, timeout=seconds).outcome == "matched"


def boot_artifact(request: BootRequest, runner: Runner, templates: Templates) -> BootResult:
    if request.memory_mib < 128:
        raise UserError(f"--memory {request.memory_mib} MiB is too little to boot", "pass at least 128")
    artifact = recognise_artifact(request.artifact)
    if artifact.kind == ROOTFS_KIND:
        raise UserError(f"'{request.artifact}' is a directory; boot takes a packed artifact",
                        "pack it first with osbuilder initrd, image or iso")
    if request.timeout <= 0:
        raise UserError(f"--timeout must be positive (got {request.timeout})", "pass the seconds to wait, e.g. --timeout 120")
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
        extensions = _attached_extensions(request, artifact, summary, work, runner)
        arch = _choose_arch(request, summary)
        device = _choose_device(request, artifact, arch)
        kernel_file = DebianArchive(arch, cache).kernel_package(runner) if debian_kernel else Path(request.kernel)
        kernel = load_kernel(kernel_file, request.modules, arch, cache, runner, pvh=request.pvh)
        found = kernel_arch(kernel.image)
        if found is not None and found != arch:
            raise UserError(f"kernel '{request.kernel}' is for {found.name}, the artifact for {arch.name}",
                            f"pass a {arch.name} kernel")
        machine = arch.qemu
        params = [f"console={machine.console}", "panic=-1", machine.kernel_params]
        plan_files: dict[str, Path] = {}
        packer = get_packer(artifact.kind)
        if packer.boots_as == BOOTS_AS_INITRD:
            if extensions and kernel.modules is not None:
                raise UserError("an initrd base cannot load the erofs, dm-verity and virtio-blk modules its "
                                "extensions need from a stock kernel's module tree",
                                "boot the base as a disk image (the boot shim loads them), or pass a kernel "
                                "with them built in")
            plan_files["initrd"] = artifact.path
        else:
            if kernel.modules is None:
                raise UserError("booting a disk image on a stock kernel needs its modules for the boot shim",
                                "pass --modules /lib/modules/<version> or a linux-image-*.deb (or --kernel the .deb)")
            shim = work / "shim.img"
            # The extensions' disks and what mounts them, loaded before the base's systemd starts.
            extra = (EXTENSION_KERNEL_MODULES + DEVICE_MODULES[machine.shim_device]) if extensions else ()
            build_shim(ShimRequest(arch, kernel.modules, "nvdimm" if device == "nvdimm" else machine.shim_device,
                                   packer.boot_modules(artifact) + extra, artifact.verity), shim, work, cache,
                       templates, runner)
            plan_files["initrd"] = shim
            plan_files["nvdimm" if device == "nvdimm" else "disk"] = artifact.path
            params += _root_params(artifact, device == "nvdimm", machine.disk_prefix)
        params += [kernel_param(e.name, e.verity_params) for e in extensions]
        if request.host_cgroup_driver:
            params.append(f"osbuilder.host_cgroup_driver={request.host_cgroup_driver}")
        if request.append:
            params.append(request.append)
        accel = request.accel
        if accel == "auto":
            verdicts = Path(request.cache_dir) if request.cache_dir else default_cache_dir()
            accel = "kvm" if remembered_kvm_probe(arch, kernel, runner, verdicts) else "tcg"
        plan = QemuPlan(arch=arch, accel=accel, kernel=kernel.image, cmdline=" ".join(params),
                        memory_mib=request.memory_mib,
                        extensions=tuple((serial(e.name), e.path) for e in extensions), **plan_files)
        expect = request.expect or _default_expect(summary)
        result = _watch(plan, expect, request.timeout, summary, device, kernel, runner)
        result.extensions = [e.as_json() for e in extensions]
        return result


@dataclass(frozen=True)
class AttachedExtension:
    name: str
    path: Path
    verity_params: str | None  # None: unmeasured (the bare kernel parameter)
    recorded_name: str | None

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "measured": self.verity_params is not None,
                "recorded_name": self.recorded_name}


def _attached_extensions(request: BootRequest, base: ArtifactInfo, summary: dict[str, Any] | None, work: Path,
                         runner: Runner) -> list[AttachedExtension]:
    """--extension, checked: each an extension image, and a base that can mount them."""
    pairs = parse_extension_images(request.extension, "--extension")
    if not pairs:
        return []
    mode = INIT_MODES.get(str(recorded_agent(summary).get("init-mode")))
    if mode is None or not mode.mounts_extensions:
        able = [name for name, m in INIT_MODES.items() if m.mounts_extensions]
        raise UserError(f"'{base.path}' cannot mount extension images: its init mode is "
                        f"{mode.name if mode else 'not recorded'}, and only a {' or '.join(able)} base runs "
                        "Kata's extension mount", f"boot a base built with --init {able[0]}")
    with open_view(base, work, runner) as view:
        support = mount_support(view)
    if not support.ok:
        raise UserError(f"'{base.path}' cannot mount extension images: {support.reason()}",
                        "rebuild the base with osbuilder (it installs the extension mount and veritysetup)")
    attached = []
    for name, image in pairs:
        extension = read_extension(image, f"--extension {name}", work, runner)
        artifact = extension.artifact
        attached.append(AttachedExtension(name, image, verity_params_for(artifact) if artifact.verity else None,
                                          extension.recorded_name))
    return attached


def _root_params(artifact: ArtifactInfo, nvdimm: bool, disk_prefix: str) -> list[str]:
    """The boot shim's kernel parameters: the root device, its file system and mount
    options, and the dm-verity table's inputs when the image has a hash partition."""
    disk = "/dev/pmem0" if nvdimm else disk_prefix

    def partition(number: int) -> str:
        return f"{disk}p{number}" if nvdimm else f"{disk}{number}"

    fs = artifact.fs or "ext4"
    root = disk if artifact.root_partition is None else partition(artifact.root_partition)
    params = [f"root={root}", f"rootfstype={fs}"]
    if nvdimm:
        flags = FILESYSTEMS[fs].dax_rootflags.split(",")
        if artifact.verity:  # dm-verity devices cannot do DAX; the other options stay
            flags = [f for f in flags if not f.startswith("dax")]
        if flags:
            params.append("rootflags=" + ",".join(flags))
    if artifact.verity:
        params += [f"osbuilder.verity={verity_params_for(artifact)}", f"osbuilder.verity_hash={partition(2)}"]
    return params


# systemd's line when a mount unit fails, whoever wrote the unit (Kata's agent tarball or osbuilder).
EXTENSION_UNIT_FAILED = re.compile(r"Failed to start[^\n]*(?:" + re.escape(UNIT_PREFIX) + r"|[Kk]ata extension)[^\n]*")


def extension_failure(console: str) -> str | None:
    """Why an extension did not mount: osbuilder's mount script's line, or systemd's."""
    if EXTENSION_ERROR_MARKER in console:
        return console[console.index(EXTENSION_ERROR_MARKER):].split("\n", 1)[0].strip()
    failed = EXTENSION_UNIT_FAILED.search(console)
    return failed.group(0).strip() if failed else None


def _watch(plan: QemuPlan, expect: str, timeout: float, summary: dict[str, Any] | None, device: str | None,
           kernel: Kernel, runner: Runner) -> BootResult:
    expected = re.compile(expect)

    def decided(console: str) -> bool:
        return bool(expected.search(console) or PANIC.search(console) or SHIM_ERROR in console
                    or PROBE_ERROR_MARKER in console or extension_failure(console))

    # After the line, give the guest a moment to power off by itself (the probe does).
    watched = runner.watch(plan.argv(), decided, timeout=timeout, linger=5.0)
    console = watched.output.replace("\r\n", "\n")
    recorded = recorded_agent(summary).get("init-mode")
    recorded_mode = INIT_MODES.get(str(recorded))
    result = BootResult(ok=False, outcome="", reason="", seconds=watched.matched_after or watched.elapsed,
                        accel=plan.accel, kernel=str(plan.kernel), pvh=kernel.pvh, device=device, expect=expect,
                        recorded_init_mode=recorded, command=watched.argv, console=console,
                        console_tail="\n".join(console.splitlines()[-CONSOLE_TAIL_LINES:]))
    match = expected.search(console)
    panic = PANIC.search(console)
    if match and not (panic and panic.start() < match.start()):
        line = console[match.start():].split("\n", 1)[0]
        result.probe = parse_probe_line(line) if PROBE_MARKER in line else None
        mismatch = recorded_mode.probe_mismatch(result.probe) if result.probe and recorded_mode else None
        if mismatch:
            result.outcome = "init-mode-mismatch"
            result.reason = f"the image records init mode '{recorded}' but the guest reports {mismatch}"
            return result
        result.ok, result.outcome, result.reason = True, "matched", f"'{expect}' appeared"
        return result
    failed_extension = extension_failure(console)
    if panic:
        result.outcome, result.reason = "panic", panic.group(0).strip()
    elif failed_extension:
        result.outcome, result.reason = "extension-error", failed_extension
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
