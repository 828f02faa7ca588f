"""`--method dracut`: a guest made from the build host's own system by dracut (docs/kata-contract.md,
distributions), with osbuilder's agent files provisioned over it like any other tree.

dracut runs with osbuilder's configuration only (the host's dracut.conf is never read), no
kernel modules, no compression, and the modules the init mode needs. Its newc archive is
unpacked through GuestRoot, so no member can write through a link onto the host.
"""

from __future__ import annotations

import glob
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from osbuilder.foundation.errors import UserError
from osbuilder.foundation.fsutil import GuestRoot, set_owner_and_time
from osbuilder.foundation.guest_layout import PASSWD
from osbuilder.rootfs.initmode import get_init_mode
from osbuilder.read.newc import NewcReader
from osbuilder.foundation.runner import PACKAGE_MANAGER, Runner
from osbuilder.foundation.templates import Templates

# What the agent and the probe call at start-up; dracut fails if the host lacks one.
REQUIRED_TOOLS = ("mount", "umount", "mkdir", "cat", "ls", "ln", "rm", "sleep", "sync", "stat", "uname")
# The guest's usual tools (docs/kata-contract.md, guest contents), taken from the host when it has them.
# veritysetup: a systemd guest mounts extension images with it (validation requires it there).
OPTIONAL_TOOLS = ("chronyd", "iptables", "ip6tables", "cryptsetup", "veritysetup", "mkfs.ext4", "busctl")
# Libraries dracut's modules leave out although what they install needs them (glibc's NSS
# modules need libresolv); taken from the host's library directories when present.
OPTIONAL_LIBRARIES = ("libresolv.so.2",)
HOST_LIBRARY_GLOBS = ("/usr/lib/*-linux-gnu", "/usr/lib64", "/lib64")
OS_RELEASE = Path("/etc/os-release")


@dataclass(frozen=True)
class HostSystem:
    """The build host's distribution, as its os-release names it."""

    distro: str
    release: str
    aliases: tuple[str, ...]

    @classmethod
    def read(cls, path: Path = OS_RELEASE) -> "HostSystem":
        fields: dict[str, str] = {}
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    fields[key.strip()] = value.strip().strip('"')
        return cls(fields.get("ID", "unknown"), fields.get("VERSION_CODENAME") or fields.get("VERSION_ID", ""),
                   tuple(fields.get("ID_LIKE", "").split()))


def build_with_dracut(init_mode: str, tree: Path, workdir: Path, runner: Runner, epoch: int | None) -> None:
    config = workdir / "dracut"
    (config / "conf.d").mkdir(parents=True, exist_ok=True)
    (config / "tmp").mkdir(exist_ok=True)
    conf = config / "dracut.conf"
    libraries = [str(path) for pattern in HOST_LIBRARY_GLOBS for directory in sorted(glob.glob(pattern))
                 for name in OPTIONAL_LIBRARIES if (path := Path(directory) / name).is_file()]
    conf.write_text(Templates().render("dracut.conf.j2", modules=get_init_mode(init_mode).dracut_modules,
                                       required=REQUIRED_TOOLS, optional=OPTIONAL_TOOLS + tuple(libraries)))
    archive = config / "initrd.cpio"
    env = {"SOURCE_DATE_EPOCH": str(epoch)} if epoch is not None else {}
    runner.run(["dracut", "--no-kernel", "--force", "--quiet", "--conf", str(conf), "--confdir",
                str(config / "conf.d"), "--tmpdir", str(config / "tmp"), str(archive)], env=env,
               limit=PACKAGE_MANAGER, hint="install dracut-core (./setup.sh); the host must have what the "
                                               "init mode's dracut modules install (systemd and dbus for systemd)")
    guest = GuestRoot(tree)
    try:
        unpack_newc(archive, guest, runner.privilege.sets_owners)
    finally:
        archive.unlink(missing_ok=True)
    lock_root_password(guest)


def lock_root_password(guest: GuestRoot) -> None:
    """dracut's base module writes root with an empty password; a guest never logs in, so
    the account gets no usable password ('*') rather than none."""
    if guest.exists(PASSWD):
        text = guest.read_text(PASSWD)
        locked = re.sub(r"^root::", "root:*:", text, flags=re.M)
        if locked != text:
            guest.replace_text(PASSWD, locked)


def unpack_newc(archive: Path, guest: GuestRoot, chown: bool) -> int:
    """Every member of a newc archive written into the tree, with its owners when `chown`
    (the build can set them); returns how many."""
    first_of_inode: dict[tuple[int, int], str] = {}
    count = 0
    with open(archive, "rb") as stream:
        reader = NewcReader(stream, str(archive))
        for member in reader.members():
            parts = [p for p in member.name.decode(errors="surrogateescape").split("/") if p not in ("", ".")]
            if ".." in parts:
                raise UserError(f"{archive}: member '{member.name!r}' has a '..' component", "rebuild it")
            if not parts:
                continue
            name = "/" + "/".join(parts)
            kind, mode = stat.S_IFMT(member.mode), member.mode & 0o7777
            if stat.S_ISDIR(member.mode):
                path = guest.mkdir(name, mode)
                os.chmod(path, mode)
            elif stat.S_ISLNK(member.mode):
                path = guest.symlink(name, stream.read(member.size).decode(errors="surrogateescape"))
            elif stat.S_ISREG(member.mode):
                key = (member.ino, member.nlink)
                if member.nlink > 1 and member.size == 0 and key in first_of_inode:
                    path = guest.hardlink(name, first_of_inode[key])
                else:
                    path = guest.write_bytes(name, stream.read(member.size), mode)
                    if member.nlink > 1:
                        first_of_inode[key] = name
            elif kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO):
                path = guest.make_special(name, kind | mode, os.makedev(member.rdevmajor, member.rdevminor))
            else:
                continue  # sockets are never archived meaningfully
            set_owner_and_time(path, member.uid, member.gid, mode, member.mtime, chown)
            count += 1
    return count
