"""Filesystems populated straight from a directory: no mount, no loop device, no root.

Each filesystem is a small class behind one interface. Sizes are computed from the tree;
UUIDs, hash seeds and timestamps come from the caller, so the same inputs give the same
bytes.
"""

from __future__ import annotations

import datetime
import os
import re
import stat
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from osbuilder.errors import UserError
from osbuilder.fsutil import GuestRoot, remove_tree
from osbuilder.pack.sizing import TreeStats
from osbuilder.runner import Runner

MACHINE_ID = "/etc/machine-id"


@dataclass(frozen=True)
class FsRequest:
    tree: Path
    image: Path  # the filesystem image file to create
    size: int | None  # exact bytes for filesystems that fill their partition
    epoch: int
    uuid: str
    block_size: int
    stats: TreeStats  # what the tree needs; sizes the filesystem's internals
    workdir: Path
    offset: int = 0  # where in `image` the filesystem starts (filesystems that can write in place)

    @property
    def device(self) -> str:
        """How libext2fs tools name a filesystem inside a larger file."""
        return f"{self.image}?offset={self.offset}" if self.offset else str(self.image)


class Filesystem(ABC):
    name: str
    # True: the image is as large as its content and is made before the layout is planned.
    content_sized: bool = False
    # True: can be made straight into the disk image at the partition's offset.
    writes_at_offset: bool = False
    block_sizes: tuple[int, ...] = (4096,)

    def check_block_size(self, block_size: int) -> None:
        if block_size not in self.block_sizes:
            raise UserError(f"--block-size {block_size} is not supported with {self.name}",
                            f"use --block-size {' or '.join(map(str, self.block_sizes))}")

    @abstractmethod
    def needed_bytes(self, stats: TreeStats) -> int:
        """Bytes the filesystem needs to hold the tree, metadata included."""

    @abstractmethod
    def make(self, request: FsRequest, runner: Runner) -> None: ...


def _has_empty_machine_id(tree: Path) -> bool:
    path = GuestRoot(tree).resolve(MACHINE_ID, follow_final=False)
    return path.is_file() and not path.is_symlink() and path.stat().st_size == 0


def _journal_blocks(total_blocks: int) -> int:
    """mke2fs's default journal size for a filesystem of this many 4 KiB blocks."""
    for limit, blocks in ((32768, 1024), (256 * 1024, 4096), (512 * 1024, 8192), (4096 * 1024, 16384),
                          (8192 * 1024, 32768), (16384 * 1024, 65536), (32768 * 1024, 131072)):
        if total_blocks < limit:
            return blocks
    return 262144


def _sparse_backup_groups(groups: int) -> int:
    count = min(groups, 2)
    for base in (3, 5, 7):
        power = base
        while power < groups:
            count += 1
            power *= base
    return count


class Ext4(Filesystem):
    name = "ext4"
    block_sizes = (1024, 2048, 4096)
    writes_at_offset = True
    RESERVED_PERCENT = 3
    INODE_SIZE = 256
    BLOCKS_PER_GROUP = 32768

    def inode_count(self, stats: TreeStats) -> int:
        # Room for the reserved inodes, lost+found, /etc/machine-id and some growth.
        return stats.inodes + 16 + max(64, stats.inodes // 10)

    def needed_bytes(self, stats: TreeStats) -> int:
        block = stats.block_size
        content = stats.data_blocks + stats.directory_blocks + stats.long_symlinks
        # Extent tree blocks: files with many extents, one block per 340 extents.
        content += stats.largest_file_blocks // (self.BLOCKS_PER_GROUP * 340) + 1
        inodes = self.inode_count(stats)
        total = content
        for _ in range(20):  # converges in a few rounds: overhead depends on the total
            groups = -(-total // self.BLOCKS_PER_GROUP)
            inodes_per_group = -(-inodes // groups)
            inode_table = groups * -(-inodes_per_group * self.INODE_SIZE // block)
            gdt = -(-groups * 64 // block)
            backups = _sparse_backup_groups(groups) * (1 + gdt)
            overhead = inode_table + 2 * groups + backups + _journal_blocks(total) + 64
            needed = -(-(content + overhead) * 100 // (100 - self.RESERVED_PERCENT))
            needed += needed // 50 + 256  # 2% + 1 MiB slack for allocation granularity
            if needed <= total:
                break
            total = needed
        return total * block

    def make(self, request: FsRequest, runner: Runner) -> None:
        assert request.size is not None
        env = {"E2FSPROGS_FAKE_TIME": str(request.epoch)}
        blocks = request.size // request.block_size
        runner.run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", str(request.block_size),
                    "-m", str(self.RESERVED_PERCENT), "-N", str(self.inode_count(request.stats)), "-O", "^resize_inode",
                    "-U", request.uuid,
                    # The target is a fresh sparse file, already zero: no need to zero tables.
                    "-E", f"hash_seed={request.uuid},nodiscard,lazy_itable_init=1,lazy_journal_init=1,"
                          f"offset={request.offset}",
                    "-d", str(request.tree), str(request.image), str(blocks)], env=env)
        script = []
        if not _has_empty_machine_id(request.tree):
            empty = request.workdir / "empty"
            empty.write_bytes(b"")
            script += [f"rm {MACHINE_ID}", f"write {empty} {MACHINE_ID}", f"sif {MACHINE_ID} mode 0100444",
                       f"sif {MACHINE_ID} uid 0", f"sif {MACHINE_ID} gid 0"]
        if script:
            self._debugfs(request, script, runner, env)
        # e2fsprogs 1.47.0 copies each source file's atime and ctime; pin them to the epoch.
        script = []
        for inode in self._used_inodes(request, runner):
            for field in ("atime", "ctime", "crtime"):
                script += [f"sif <{inode}> {field} @{request.epoch}", f"sif <{inode}> {field}_extra 0"]
        self._debugfs(request, script, runner, env)

    def _debugfs(self, request: FsRequest, commands: list[str], runner: Runner, env: dict[str, str]) -> None:
        script = request.workdir / "debugfs.cmds"
        script.write_text("\n".join(commands) + "\n")
        result = runner.run(["debugfs", "-w", "-f", str(script), request.device], env=env)
        errors = [line for line in result.stderr_tail.splitlines()
                  if line.strip() and not line.startswith("debugfs ") and "not found" not in line]
        if errors:
            raise UserError(f"debugfs could not finish the ext4 image: {errors[-1]}", "report this as a bug")

    def _used_inodes(self, request: FsRequest, runner: Runner) -> list[int]:
        """Inodes in use, from dumpe2fs's per-group free-inode ranges."""
        out = runner.run(["dumpe2fs", request.device]).stdout
        total = int(re.search(r"^Inode count:\s+(\d+)", out, re.M).group(1))
        free: set[int] = set()
        for ranges in re.findall(r"^\s+Free inodes: (.*)$", out, re.M):
            for part in filter(None, (p.strip() for p in ranges.split(","))):
                first, _, last = part.partition("-")
                free.update(range(int(first), int(last or first) + 1))
        return [i for i in range(1, total + 1) if i not in free and (i == 2 or i >= 11)]


class Erofs(Filesystem):
    name = "erofs"
    content_sized = True

    def needed_bytes(self, stats: TreeStats) -> int:
        return stats.content_bytes  # an upper bound: the image is made first and measured

    def make(self, request: FsRequest, runner: Runner) -> None:
        mkfs = ["mkfs.erofs", "--quiet", "-zlz4hc", "-Enoinline_data", f"-T{request.epoch}", f"-U{request.uuid}",
                str(request.image)]
        if _has_empty_machine_id(request.tree):
            runner.run([*mkfs, str(request.tree)])
            return
        # mkfs.erofs 1.5 cannot add a file, and the user's tree is never touched: pack a copy
        # that has it. Only root can recreate owners and device nodes in a copy, so anyone else
        # makes it under fakeroot. fakeroot keeps what it fakes only while its session lives
        # and reports the tree's own owners only to a process outside its preload, so the tools
        # that read the tree run outside it, and the copy, the machine-id and mkfs.erofs share
        # one session. Root runs the same script without fakeroot.
        guest = GuestRoot(request.tree)
        machine_id = guest.resolve(MACHINE_ID, follow_final=False).relative_to(guest.root)
        copy = request.workdir / "erofs-source"
        remove_tree(copy)
        copy.mkdir()
        fakeroot = [] if os.geteuid() == 0 else ["fakeroot", "--unknown-is-real", "--"]
        runner.run([*fakeroot, "bash", "-euo", "pipefail", "-c", _EROFS_COPY_SCRIPT, "erofs-copy",
                    str(request.tree), str(copy), str(machine_id), *mkfs, str(copy)])


# $1 tree, $2 empty copy directory, $3 the machine-id path relative to the copy (its parents
# resolved inside the tree), then the mkfs.erofs command line.
# xattrs (file capabilities, ACLs, SELinux labels) travel in a second pass, not in tar: GNU
# tar creates a file that has xattrs with mknod(2) and a mode without S_IFREG, which fakeroot
# records as is, and mkfs.erofs then rejects the typeless inode with EINVAL.
_EROFS_COPY_SCRIPT = """
LD_PRELOAD= tar -c -f - -C "$1" --numeric-owner --sparse . |
    tar -x -f - -C "$2" --numeric-owner --same-owner --same-permissions
(cd -- "$1" && LD_PRELOAD= getfattr --recursive --physical --no-dereference --dump --match=- --encoding=hex .) |
    (cd -- "$2" && setfattr --no-dereference --restore=-)
rm -f -- "$2/$3"
: > "$2/$3"
chown 0:0 -- "$2/$3"
chmod 0444 -- "$2/$3"
shift 3
exec "$@"
"""


class Xfs(Filesystem):
    """xfs from a protofile. mkfs.xfs 6.1 stamps inodes with the clock and has no option to
    fix it, so it runs under a frozen libfaketime clock set to the epoch."""

    name = "xfs"
    MIN_BYTES = 300 * 1024 * 1024  # mkfs.xfs refuses anything smaller
    INODE_SIZE = 512

    # mkfs.xfs 6.1 reads each protofile source with one read(2), which stops short at 2 GiB.
    MAX_FILE = 0x7FFFF000

    def needed_bytes(self, stats: TreeStats) -> int:
        # Protofile copies write holes out as data, so size by apparent size.
        content = (stats.apparent_bytes + (stats.directory_blocks + stats.long_symlinks) * stats.block_size
                   + stats.inodes * (self.INODE_SIZE * 2 + stats.block_size))
        log = 64 * 1024 * 1024
        # Two allocation groups at least, each larger than the largest file (see make()).
        return max(self.MIN_BYTES, content + content // 10 + log + 32 * 1024 * 1024,
                   2 * self.min_ag_bytes(stats.largest_file_bytes))

    @staticmethod
    def min_ag_bytes(largest_file: int) -> int:
        return largest_file + largest_file // 4 + 16 * 1024 * 1024


    def make(self, request: FsRequest, runner: Runner) -> None:
        empty = request.workdir / "empty"
        empty.write_bytes(b"")
        proto = request.workdir / "xfs.proto"
        sticky: list[tuple[str, int]] = []
        with open(proto, "w") as out:
            out.write("/dev/null\n0 0\n")
            write_protofile(request.tree, out, empty, sticky)
        when = datetime.datetime.fromtimestamp(request.epoch, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        # mkfs.xfs 6.1 corrupts the filesystem when a protofile source is larger than an
        # allocation group, so the groups are made large enough (2 to 4 of them).
        assert request.size is not None
        agcount = max(2, min(4, request.size // self.min_ag_bytes(request.stats.largest_file_bytes)))
        runner.run(["faketime", "-f", when, "mkfs.xfs", "-q", "-f", "-b", f"size={request.block_size}",
                    "-d", f"agcount={agcount}",
                    "-m", f"reflink=0,uuid={request.uuid}", "-p", str(proto), str(request.image)],
                   env={"TZ": "UTC"})
        # Protofiles cannot express the sticky bit; set it afterwards on the inodes that had it.
        for path, mode in sticky:
            runner.run(["xfs_db", "-x", "-c", f"path {path}", "-c", f"write core.mode 0{mode:o}", str(request.image)])


def _proto_mode(st: os.stat_result) -> str:
    kind = {stat.S_IFREG: "-", stat.S_IFDIR: "d", stat.S_IFLNK: "l", stat.S_IFCHR: "c",
            stat.S_IFBLK: "b", stat.S_IFIFO: "p"}[stat.S_IFMT(st.st_mode)]
    setuid = "u" if st.st_mode & stat.S_ISUID else "-"
    setgid = "g" if st.st_mode & stat.S_ISGID else "-"
    return f"{kind}{setuid}{setgid}{st.st_mode & 0o777:03o} {st.st_uid} {st.st_gid}"


def write_protofile(root: Path, out: TextIO, empty: Path, sticky: list[tuple[str, int]], guest_dir: str = "",
                    depth: int = 0) -> None:
    """One protofile block per directory, entries sorted; recursion follows the tree."""
    st = os.lstat(root)
    if depth == 0:
        out.write(_proto_mode(st) + "\n")
    names = sorted(os.listdir(root), key=os.fsencode)
    if guest_dir == "/etc" and "machine-id" not in names:
        names = sorted(names + ["machine-id"], key=os.fsencode)
    indent = " " * (depth + 1)
    for name in names:
        path = Path(root, name)
        guest_path = f"{guest_dir}/{name}"
        if any(c.isspace() for c in name):
            raise UserError(f"xfs cannot hold the name {guest_path!r}: mkfs.xfs protofiles split names at spaces",
                            "rename it, or use --fs ext4 or --fs erofs")
        if guest_path == MACHINE_ID:
            out.write(f"{indent}machine-id ---444 0 0 {empty}\n")
            continue
        st = os.lstat(path)
        mode = _proto_mode(st)
        if st.st_mode & stat.S_ISVTX:
            sticky.append((guest_path, stat.S_IFMT(st.st_mode) | stat.S_IMODE(st.st_mode)))
        if stat.S_ISDIR(st.st_mode):
            out.write(f"{indent}{name} {mode}\n")
            write_protofile(path, out, empty, sticky, guest_path, depth + 1)
        elif stat.S_ISREG(st.st_mode):
            if st.st_size > Xfs.MAX_FILE:
                raise UserError(f"xfs cannot hold {guest_path} ({st.st_size} bytes): mkfs.xfs 6.1 protofiles "
                                "copy at most 2 GiB per file", "use --fs ext4 or --fs erofs")
            out.write(f"{indent}{name} {mode} {path}\n")
        elif stat.S_ISLNK(st.st_mode):
            target = os.readlink(path)
            if any(c.isspace() for c in target) or not target:
                raise UserError(f"xfs cannot hold the symlink {guest_path} -> {target!r}",
                                "use --fs ext4 or --fs erofs")
            out.write(f"{indent}{name} {mode} {target}\n")
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            out.write(f"{indent}{name} {mode} {os.major(st.st_rdev)} {os.minor(st.st_rdev)}\n")
        elif stat.S_ISFIFO(st.st_mode):
            out.write(f"{indent}{name} {mode}\n")
    out.write(" " * depth + "$\n")


FILESYSTEMS: dict[str, Filesystem] = {fs.name: fs for fs in (Ext4(), Erofs(), Xfs())}


def get_filesystem(name: str) -> Filesystem:
    try:
        return FILESYSTEMS[name]
    except KeyError:
        raise UserError(f"unknown filesystem '{name}'", f"use --fs {' or --fs '.join(FILESYSTEMS)}") from None
