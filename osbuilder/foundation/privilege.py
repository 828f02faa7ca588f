"""How this build runs commands and writes owners: as root, under fakeroot, or as an ordinary
user with user namespaces. One Privilege object is made at start-up and handed (on the
Runner) to everything that runs a command or sets an owner; nothing else asks the kernel
who it is (tests/unit/test_structure.py).

Unprivileged builds: the guest's owners and device nodes without root.

`osbuilder build` run by an ordinary user re-executes itself under fakeroot: every process
of the build (osbuilder, tar, mke2fs, mkfs.erofs, ...) then sees the owners and device nodes
it set, recorded by fakeroot instead of on disk, so the artifacts carry root's owners and
/dev's nodes exactly as a root build's do. The package managers that must create a tree
for real run with the user's own ids: mmdebstrap in its unshare mode (with the user's
subordinate id ranges) handing over a tarball; dnf in a user namespace with the same ranges,
its tree handed over as a tarball too; osbuilder's apk installer the same way (it and the
packages' scripts run as root of that namespace, where they may delete or replace files:
had fakeroot recorded those files, the deletions it never saw would leave stale records
for a later file that reuses an inode number). A tree written to a directory as an ordinary user could not keep those
owners after the run, so `osbuilder rootfs` needs root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, NoReturn, Sequence

from osbuilder.foundation.errors import UserError

MARK = "OSBUILDER_FAKEROOT"  # set for the re-executed build: its euid 0 is fakeroot's
ROOT, FAKEROOT, USER = "root", "fakeroot", "user"


@dataclass(frozen=True)
class Privilege:
    mode: str  # ROOT, FAKEROOT (a re-executed ordinary user's build) or USER
    subordinate_ids: bool  # /etc/subuid and /etc/subgid give the real user ranges

    @classmethod
    def detect(cls, environ: Mapping[str, str] = os.environ) -> "Privilege":
        """This process's: the one place osbuilder asks the kernel and the environment."""
        root_ids = os.geteuid() == 0
        mode = (FAKEROOT if environ.get(MARK) else ROOT) if root_ids else USER
        return cls(mode, mode == ROOT or _has_subordinate_ids())

    @property
    def root(self) -> bool:
        """Really root: owners set on disk, device nodes made, chroot entered, mounts."""
        return self.mode == ROOT

    @property
    def faked(self) -> bool:
        """Under fakeroot: owners and device nodes are fakeroot's records of this run's inodes."""
        return self.mode == FAKEROOT

    @property
    def sets_owners(self) -> bool:
        """chown and mknod take effect (root) or are recorded (fakeroot)."""
        return self.mode in (ROOT, FAKEROOT)

    @property
    def reads_everything(self) -> bool:
        return self.root

    @staticmethod
    def own_ids() -> tuple[int, int]:
        """The uid and gid this process's files get (fakeroot's 0 under fakeroot)."""
        return os.getuid(), os.getgid()

    def real_user_env(self) -> dict[str, str]:
        """Environment for a command that must run as the real user (not under fakeroot)."""
        return {"LD_PRELOAD": "", "FAKEROOTKEY": "", MARK: ""} if self.faked else {}

    @staticmethod
    def in_user_namespace(argv: Sequence[str]) -> list[str]:
        """`argv` as root of a new user namespace: the caller's own id is root there and its first
        subordinate range (/etc/subuid, /etc/subgid) ids 1-65535, so a package manager can set any
        owner a guest needs. On disk those owners are the caller and its subordinate ids."""
        return ["unshare", "--user", "--map-auto", "--map-root-user", "--", *argv]

    def require_user_namespace(self, what: str, why: str) -> None:
        """Refuse, before any work, an unprivileged install that needs subordinate id ranges."""
        if not self.root and not self.subordinate_ids:
            raise UserError(f"{what} as an ordinary user needs subordinate ids ({why})",
                            "add ranges for this user to /etc/subuid and /etc/subgid (usermod --add-subuids "
                            "100000-165535 --add-subgids 100000-165535 USER), or run as root")

    def owner_recording(self) -> list[str]:
        """A prefix for a tool that must see the owners it is given when this process cannot
        set them (an ordinary user packing outside a build): fakeroot records them."""
        return [] if self.sets_owners else ["fakeroot", "--unknown-is-real", "--"]

    def reexec_under_fakeroot(self, argv: Sequence[str]) -> NoReturn:
        fakeroot = shutil.which("fakeroot")
        if fakeroot is None:
            raise UserError("building as an ordinary user needs fakeroot, which is not installed",
                            "run ./setup.sh (or apt-get install fakeroot uidmap), or build as root")
        os.execve(fakeroot, [fakeroot, "--", sys.executable, "-m", "osbuilder", *argv], {**os.environ, MARK: "1"})


def _has_subordinate_ids() -> bool:
    """Whether /etc/subuid and /etc/subgid give the caller (by name or id) a range."""
    uid = real_uid()
    names = {str(uid)}
    try:
        names.add(pwd.getpwuid(uid).pw_name)
    except KeyError:
        pass
    return all(_listed(Path(path), names) for path in ("/etc/subuid", "/etc/subgid"))


def real_uid() -> int:
    """The kernel's idea of the caller's uid: under fakeroot, getuid() says 0."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    return os.getuid()


def _listed(path: Path, names: set[str]) -> bool:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return False
    return any(line.split(":")[0] in names for line in lines if line.count(":") == 2)
