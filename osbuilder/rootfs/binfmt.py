"""Running foreign-architecture guest binaries on the build host through qemu-user."""

from __future__ import annotations

from pathlib import Path

from osbuilder.foundation.arch import Arch, host_arch
from osbuilder.foundation.errors import UserError
from osbuilder.foundation.runner import PROBE, Runner

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")


def _enabled(arch: Arch) -> bool:
    entry = BINFMT_DIR / arch.qemu_user
    try:
        return entry.read_text().splitlines()[0].strip() == "enabled"
    except (OSError, IndexError):
        return False


def ensure_binfmt(arch: Arch, runner: Runner) -> None:
    """Make sure the host can execute `arch` binaries, registering qemu-user if needed."""
    if arch == host_arch() or _enabled(arch):
        return
    how = (f"install qemu-user-static and binfmt-support, then as root run: "
           f"mount -t binfmt_misc binfmt_misc {BINFMT_DIR}; update-binfmts --enable {arch.qemu_user}")
    if not runner.privilege.root:
        raise UserError(f"cannot run {arch.name} binaries: the binfmt handler {arch.qemu_user} is not registered", how)
    if not (BINFMT_DIR / "register").exists():
        runner.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)], check=False, limit=PROBE)
    if not Path("/usr/share/binfmts", arch.qemu_user).exists():
        raise UserError(f"cannot run {arch.name} binaries: qemu-user-static is not installed", how)
    runner.run(["update-binfmts", "--enable", arch.qemu_user], check=False, limit=PROBE)
    if not _enabled(arch):
        raise UserError(f"cannot run {arch.name} binaries: registering {arch.qemu_user} failed", how)
