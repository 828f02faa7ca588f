"""Safe file operations inside a guest tree, and safe removal of trees.

A guest tree is full of absolute symlinks (/etc/resolv.conf -> /run/..., /sbin -> usr/sbin)
that are meant for the guest, not for the build host. GuestRoot resolves every path the
way the guest kernel would with the tree as `/`: absolute link targets restart at the
tree's root and `..` never climbs above it. Writes never follow a symlink in their final
component; they replace the link instead.
"""

from __future__ import annotations

import errno
import hashlib
import fnmatch
import posixpath
import os
import shutil
import stat
import threading
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, Iterator

from osbuilder.foundation.errors import BuildError, UserError

MAX_SYMLINK_HOPS = 40


def resolve_in_guest(guest_path: str, is_symlink: Callable[[str], bool], readlink: Callable[[str], str], *,
                     follow_final: bool = True, where: str = "the guest") -> str:
    """`guest_path` with its symlinks resolved the way the guest's kernel would with the tree
    as `/`: absolute targets restart at the root and `..` never climbs above it. Works on any
    tree that answers is_symlink and readlink for guest paths (a directory, an image)."""
    parts = list(PurePosixPath("/", guest_path).parts[1:])
    resolved: list[str] = []
    hops = 0
    while parts:
        name = parts.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = "/" + "/".join(resolved + [name])
        if (follow_final or parts) and is_symlink(candidate):
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise BuildError(f"too many symlinks resolving {guest_path} in {where}")
            target = readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in PurePosixPath(target).parts if p != "/"] + parts
            continue
        resolved.append(name)
    return "/" + "/".join(resolved)


class GuestRoot:
    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))

    # -- resolution -------------------------------------------------------------------
    def resolve(self, guest_path: str, *, follow_final: bool = True) -> Path:
        """Host path for `guest_path`, resolving symlinks inside the tree only."""
        def host(path: str) -> Path:
            return self.root.joinpath(path.lstrip("/"))

        resolved = resolve_in_guest(guest_path, lambda p: host(p).is_symlink(), lambda p: os.readlink(host(p)),
                                    follow_final=follow_final, where=str(self.root))
        return host(resolved)

    def guest_path_of(self, host_path: Path) -> str:
        return "/" + str(Path(host_path).relative_to(self.root))

    def lexists(self, guest_path: str) -> bool:
        return os.path.lexists(self.resolve(guest_path, follow_final=False))

    def exists(self, guest_path: str) -> bool:
        return self.resolve(guest_path).exists()

    def read_text(self, guest_path: str) -> str:
        return self.resolve(guest_path).read_text()

    # -- writes -----------------------------------------------------------------------
    def _parent_for_write(self, guest_path: str) -> Path:
        target = self.resolve(guest_path, follow_final=False)
        if target == self.root:
            raise BuildError(f"cannot write to the root of {self.root} itself")
        # Every component but the last is already resolved inside the tree, and any
        # missing ones are created as plain directories.
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def _clear(self, host_path: Path) -> None:
        """Remove what stands at host_path (a link, a file or an empty directory) before
        writing; a directory with something in it is never replaced by a file."""
        if host_path.is_symlink() or (host_path.exists() and not host_path.is_dir()):
            host_path.unlink()
        elif host_path.is_dir():
            try:
                host_path.rmdir()
            except OSError:
                raise BuildError(f"cannot write the file {self.guest_path_of(host_path)}: a directory with files in "
                                 "it is there", "remove the directory from the tree or the overlay that made it") \
                    from None

    def write_bytes(self, guest_path: str, data: bytes, mode: int = 0o644) -> Path:
        path = self._parent_for_write(guest_path)
        self._clear(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(path, mode, follow_symlinks=False)
        return path

    def write_text(self, guest_path: str, text: str, mode: int = 0o644) -> Path:
        return self.write_bytes(guest_path, text.encode(), mode)

    def replace_text(self, guest_path: str, text: str) -> Path:
        """Give an existing file new content and keep its mode, following links only within
        the tree. The content goes into a new file (a new inode) put where the old one was:
        the old inode may be a hard link into the build cache's copy (see cache.py), which
        must not change."""
        path = self.resolve(guest_path)
        mode = stat.S_IMODE(path.lstat().st_mode)
        return self.write_text(self.guest_path_of(path), text, mode)

    def copy_file(self, host_source: Path, guest_path: str, mode: int = 0o755) -> Path:
        with open(host_source, "rb") as src:
            return self.write_stream(guest_path, src, mode)

    def write_stream(self, guest_path: str, source: BinaryIO, mode: int = 0o644) -> Path:
        """A regular file from a stream, never written through a link."""
        path = self._parent_for_write(guest_path)
        self._clear(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(source, dst, 1 << 20)
        os.chmod(path, mode, follow_symlinks=False)
        return path

    def hardlink(self, guest_path: str, existing: str) -> Path:
        """A second name for the regular file at `existing` (resolved inside the tree)."""
        target = self.resolve(existing, follow_final=False)
        if target.is_symlink() or not target.is_file():
            raise BuildError(f"cannot link {guest_path} to {existing}: not a regular file in {self.root}")
        path = self._parent_for_write(guest_path)
        self._clear(path)
        os.link(target, path, follow_symlinks=False)
        return path

    def copy_tree(self, host_source: Path, guest_path: str) -> Path:
        """Copy a host directory into the tree; links inside it are copied as links."""
        dest = self.mkdir(guest_path)
        for entry in sorted(os.scandir(host_source), key=lambda e: e.name):
            sub = f"{self.guest_path_of(dest)}/{entry.name}"
            if entry.is_symlink():
                self.symlink(sub, os.readlink(entry.path))
            elif entry.is_dir():
                self.copy_tree(Path(entry.path), sub)
            elif entry.is_file():
                self.copy_file(Path(entry.path), sub, stat.S_IMODE(entry.stat().st_mode))
        return dest

    def mkdir(self, guest_path: str, mode: int = 0o755) -> Path:
        path = self.resolve(guest_path)
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            path.unlink()
        path.mkdir(mode=mode, parents=True, exist_ok=True)
        return path

    def symlink(self, guest_path: str, target: str) -> Path:
        path = self._parent_for_write(guest_path)
        if path.is_dir() and not path.is_symlink():
            remove_tree(path)
        self._clear(path)
        os.symlink(target, path)
        return path

    def mknod_char(self, guest_path: str, major: int, minor: int, mode: int = 0o666) -> Path:
        return self.make_special(guest_path, stat.S_IFCHR | mode, os.makedev(major, minor))

    def make_special(self, guest_path: str, mode: int, device: int) -> Path:
        """A device node or fifo (`mode` carries its type)."""
        path = self._parent_for_write(guest_path)
        self._clear(path)
        try:
            os.mknod(path, mode, device)
        except PermissionError:
            raise UserError(f"cannot create device node {guest_path}: creating device nodes needs root",
                            "run osbuilder as root") from None
        os.chmod(path, stat.S_IMODE(mode))
        return path

    def glob(self, pattern: str) -> list[str]:
        """Guest paths matching `pattern` (fnmatch per component: `*`, `?`, `[...]`), resolved
        inside the guest: a link in the tree is followed as the guest would, never onto the host."""
        matches = ["/"]
        for part in [p for p in pattern.split("/") if p]:
            following = []
            for base in matches:
                if not any(c in part for c in "*?["):
                    candidate = posixpath.join(base, part)
                    if self.lexists(candidate):
                        following.append(candidate)
                    continue
                directory = self.resolve(base)
                if directory.is_dir():
                    following += [posixpath.join(base, name) for name in sorted(os.listdir(directory))
                                  if fnmatch.fnmatchcase(name, part)]
            matches = following
        return [m for m in matches if m != "/"]

    def remove_matching(self, pattern: str) -> int:
        """Remove every path `pattern` matches (see glob); returns how many."""
        matched = self.glob(pattern)
        for path in matched:
            self.remove(path)
        return len(matched)

    def remove(self, guest_path: str) -> None:
        """Remove a file, link or whole directory; a link is removed, never followed."""
        path = self.resolve(guest_path, follow_final=False)
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            path.unlink()
        elif path.is_dir():
            remove_tree(path)


def write_atomically(path: Path, data: bytes) -> None:
    """`path` holds `data` whole or not at all, for readers in other processes: written under
    a temporary name (this process's and thread's) and renamed into place."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def set_owner_and_time(path: Path, uid: int, gid: int, mode: int, mtime: int, chown: bool) -> None:
    """An unpacked member's owner (when `chown`), special mode bits and mtime, never through a
    link: what every unpacker (tarballs, apk packages, newc archives) does after writing one."""
    if chown:
        os.chown(path, uid, gid, follow_symlinks=False)
        if not os.path.islink(path) and mode & 0o7000:
            os.chmod(path, mode)  # chown clears setuid/setgid
    os.utime(path, (mtime, mtime), follow_symlinks=False)


def fill_holes_in_tree(root: Path) -> None:
    """Write every sparse file's holes under `root` as zeros, as unpacking a tarball does.

    A package manager writing in place leaves a few sparse files; the same tree unpacked from
    the bootstrap cache has none. mke2fs -d skips holes, and the superblock's count of
    kilobytes written would tell the two trees' images apart. (Directory order does not
    matter: mke2fs, mkfs.erofs and osbuilder's own writers list entries sorted.)"""
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    info = entry.stat(follow_symlinks=False)
                    if info.st_blocks * 512 < info.st_size:
                        _fill_holes(Path(entry.path))


def _fill_holes(path: Path) -> None:
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode) or info.st_blocks * 512 >= info.st_size:
        return
    with open(path, "r+b") as f:
        data = f.read()
        f.seek(0)
        f.write(data)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


def remove_tree(path: Path) -> None:
    """rm -rf that never follows links and refuses to descend into another mount.

    A staging tree left behind by an interrupted bootstrap might still have /proc or /dev
    mounted inside it; deleting through such a mount would delete the host's files.
    """
    path = Path(path)
    try:
        top = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(top.st_mode):
        path.unlink()
        return
    _remove_dir(path, top.st_dev)


def _remove_dir(path: Path, device: int) -> None:
    with os.scandir(path) as entries:
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if st.st_dev != device:
                    raise BuildError(f"refusing to delete {entry.path}: it is a mount point",
                                     f"unmount it (umount -R {entry.path}) and remove the directory by hand")
                _remove_dir(Path(entry.path), device)
            else:
                os.unlink(entry.path)
    try:
        os.rmdir(path)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise BuildError(f"refusing to delete {path}: it is a mount point", f"unmount it (umount -R {path})") from None
        raise


# System directories an output must never be, or contain.
SYSTEM_DIRS = frozenset(
    "/ /bin /boot /dev /etc /home /lib /lib32 /lib64 /libx32 /media /mnt /opt /proc /root /run "
    "/sbin /srv /sys /tmp /usr /var".split()
)
_SYSTEM_PREFIXES = ("/proc/", "/sys/", "/dev/", "/boot/", "/etc/", "/run/")


def check_output_path(output: Path, flag: str = "-o") -> Path:
    """Refuse outputs that would overwrite or hide part of the host system."""
    resolved = Path(os.path.realpath(output))
    text = str(resolved)
    parent = str(resolved.parent)
    if (text in SYSTEM_DIRS or text.startswith(_SYSTEM_PREFIXES)
            or parent in ("/usr", "/var")
            or text == str(Path.home())):
        raise UserError(f"refusing to write to system directory '{text}' ({flag} {output})",
                        f"pass a new directory such as {flag} ./out/rootfs")
    return resolved


def clamp_mtimes(root: Path, epoch: int) -> int:
    """Set every mtime newer than `epoch` to `epoch` (links included, never followed).

    Provisioning writes files and directories with the clock's time; clamping makes the
    tree, and every artifact packed from it, independent of when it was built."""
    clamped = 0
    stack = [str(root)]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
                if st.st_mtime > epoch:
                    os.utime(entry.path, (epoch, epoch), follow_symlinks=False)
                    clamped += 1
    if os.lstat(root).st_mtime > epoch:
        os.utime(root, (epoch, epoch), follow_symlinks=False)
        clamped += 1
    return clamped


def data_regions(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) byte ranges of a file that hold data; holes are skipped."""
    position = 0
    while position < size:
        try:
            start = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nothing but a hole after `position`
                return
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, end
        position = end


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def first_unreadable(root: Path, reads_everything: bool) -> str | None:
    """The first path under `root` this user cannot read (a directory: list and enter), or None.

    Root reads everything, so only other users need the walk."""
    if reads_everything:
        return None
    stack = [str(root)]
    while stack:
        directory = stack.pop()
        if not os.access(directory, os.R_OK | os.X_OK):
            return directory
        with os.scandir(directory) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False) and not os.access(entry.path, os.R_OK):
                    return entry.path
    return None


WalkEntry = tuple[bytes, os.DirEntry, os.stat_result]


def walk_entries(root: Path) -> Iterator[WalkEntry]:
    """Every path below `root`, never following a link: (its name relative to `root`, its
    entry, its lstat), each directory's entries in name order. The one walk the tree digests
    (cache.py, verified.py) take, so they cannot order a tree differently."""
    stack = [(str(root), b"")]
    while stack:
        directory, prefix = stack.pop()
        with os.scandir(directory) as it:
            items = sorted(it, key=lambda item: item.name)
        for item in items:
            st = item.stat(follow_symlinks=False)
            name = prefix + os.fsencode(item.name)
            if stat.S_ISDIR(st.st_mode):
                stack.append((item.path, name + b"/"))
            yield name, item, st


class TreeListing:
    """One walk of a tree (walk_entries), taken the first time it is asked for and kept: a
    pack reads the tree's metadata for the verified digest, the filesystem's size, the mtimes
    to clamp and the initrd's archive, and a tree of 12,000 paths is walked once for all of
    them. The tree must not change while the listing is in use (a packer never writes into
    the tree it packs)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._entries: list[WalkEntry] | None = None
        self._walking = threading.Lock()  # formats packed side by side wait for one walk

    @property
    def entries(self) -> list[WalkEntry]:
        with self._walking:
            if self._entries is None:
                self._entries = list(walk_entries(self.root))
            return self._entries
