"""ext4 with mke2fs -d, made in place at the partition's offset."""

from __future__ import annotations

import os
import re
import struct

from osbuilder.foundation.errors import InternalError, UserError
from osbuilder.foundation.fsutil import TreeListing
from osbuilder.foundation.guest_layout import MACHINE_ID
from osbuilder.pack.fs.base import Filesystem, FsRequest, FsSource
from osbuilder.pack.sizing import TreeStats
from osbuilder.read.view import GuestView, Node
from osbuilder.foundation.runner import FILESYSTEM, PROBE, Runner


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
    magic = (1024 + 0x38, struct.pack("<H", 0xEF53))
    kernel_module = "ext4"
    dax_rootflags = "dax,data=ordered,errors=remount-ro"  # docs/kata-contract.md, disk layout
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
        # mke2fs -d lists each directory with scandir and alphasort, which collates by locale.
        env = {"E2FSPROGS_FAKE_TIME": str(request.epoch), "LC_ALL": "C"}
        blocks = request.size // request.block_size
        runner.run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", str(request.block_size),
                    "-m", str(self.RESERVED_PERCENT), "-N", str(self.inode_count(request.stats)), "-O", "^resize_inode",
                    "-U", request.uuid,
                    # The target is a fresh sparse file, already zero: no need to zero tables.
                    "-E", f"hash_seed={request.uuid},nodiscard,lazy_itable_init=1,lazy_journal_init=1,"
                          f"offset={request.offset}",
                    "-d", str(request.tree), str(request.image), str(blocks)], env=env, limit=FILESYSTEM)
        script = []
        if request.adds_machine_id:
            empty = request.workdir / "empty"
            empty.write_bytes(b"")
            script += [f"rm {MACHINE_ID}", f"write {empty} {MACHINE_ID}", f"sif {MACHINE_ID} mode 0100444",
                       f"sif {MACHINE_ID} uid 0", f"sif {MACHINE_ID} gid 0"]
        if script:
            self._debugfs(request, script, runner, env)
        # e2fsprogs 1.47.0 copies each source file's atime and ctime; pin them to the epoch,
        # and clamp to it the mtimes newer than it (as the initrd's cpio does): otherwise a
        # tree touched after its epoch packs with the host's clock in it.
        script = [command for path in paths_newer_than(request.listing, request.epoch)
                  for command in (f"sif {debugfs_quoted(path)} mtime @{request.epoch}",
                                  f"sif {debugfs_quoted(path)} mtime_extra 0")]
        for inode in self._used_inodes(request, runner):
            for field in ("atime", "ctime", "crtime"):
                script += [f"sif <{inode}> {field} @{request.epoch}", f"sif <{inode}> {field}_extra 0"]
        self._debugfs(request, script, runner, env)

    def _debugfs(self, request: FsRequest, commands: list[str], runner: Runner, env: dict[str, str]) -> None:
        script = request.workdir / "debugfs.cmds"
        script.write_text("\n".join(commands) + "\n")
        result = runner.run(["debugfs", "-w", "-f", str(script), request.device], env=env, limit=FILESYSTEM)
        errors = [line for line in result.stderr_tail.splitlines()
                  if line.strip() and not line.startswith("debugfs ") and "not found" not in line]
        if errors:
            raise InternalError(f"debugfs could not finish the ext4 image: {errors[-1]}")

    def _used_inodes(self, request: FsRequest, runner: Runner) -> list[int]:
        """Inodes in use, from dumpe2fs's per-group free-inode ranges."""
        out = runner.run(["dumpe2fs", request.device], limit=PROBE).stdout
        total = int(re.search(r"^Inode count:\s+(\d+)", out, re.M).group(1))
        free: set[int] = set()
        for ranges in re.findall(r"^\s+Free inodes: (.*)$", out, re.M):
            for part in filter(None, (p.strip() for p in ranges.split(","))):
                first, _, last = part.partition("-")
                free.update(range(int(first), int(last or first) + 1))
        return [i for i in range(1, total + 1) if i not in free and (i == 2 or i >= 11)]

    def open_view(self, source: FsSource, runner: Runner) -> GuestView:
        return Ext4View(source, runner)


def debugfs_quoted(path: str) -> str:
    """A guest path as one debugfs argument."""
    if "\n" in path:
        raise UserError(f"the file name {path!r} holds a newline, which debugfs cannot be given",
                        "rename the file, or pack the tree as erofs or xfs")
    return '"' + path.replace('"', '\\"') + '"'


def paths_newer_than(listing: TreeListing, epoch: int) -> list[str]:
    """Guest paths (the root included) whose mtime is later than `epoch`."""
    newer = ["/"] if os.lstat(listing.root).st_mtime > epoch else []
    return newer + ["/" + os.fsdecode(name) for name, _, st in listing.entries if st.st_mtime > epoch]


class Ext4View(GuestView):
    """An ext4 filesystem read with debugfs at its offset: nothing copied, nothing mounted."""

    def __init__(self, source: FsSource, runner: Runner) -> None:
        self.source = source
        self.runner = runner
        self.where = str(source.image)
        self.device = f"{source.image}?offset={source.offset}" if source.offset else str(source.image)

    def _debugfs(self, request: str) -> tuple[str, str]:
        result = self.runner.run(["debugfs", "-R", request, self.device], check=False, limit=FILESYSTEM)
        return result.stdout, result.stderr_tail


    def used_bytes(self) -> int | None:
        out = self.runner.run(["dumpe2fs", "-h", self.device], check=False, limit=PROBE).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        try:
            return (int(fields["Block count"]) - int(fields["Free blocks"])) * int(fields["Block size"])
        except (KeyError, ValueError):
            return None

    def _lstat(self, path: str) -> Node | None:
        out, _ = self._debugfs(f"stat {debugfs_quoted(path)}")
        mode = re.search(r"Mode:\s+(\d+)", out)
        kind = re.search(r"Type: (\w+)", out)
        if mode is None or kind is None:
            return None
        size = int(re.search(r"Size: (\d+)", out).group(1))
        kinds = {"regular": "file", "directory": "dir", "symlink": "symlink"}
        return Node(kinds.get(kind.group(1), "other"), int(mode.group(1), 8), size)

    def _readlink(self, path: str) -> str:
        out, _ = self._debugfs(f"stat {debugfs_quoted(path)}")
        fast = re.search(r'Fast link dest: "(.*)"', out)
        return fast.group(1) if fast else self._read(path).decode(errors="surrogateescape")

    def _listdir(self, path: str) -> list[str]:
        out, _ = self._debugfs(f"ls -p {debugfs_quoted(path)}")
        names = [line.split("/")[5] for line in out.splitlines() if line.count("/") >= 6]
        return sorted(name for name in names if name not in (".", ".."))

    def _read(self, path: str) -> bytes:
        dumped = self.source.workdir / "debugfs.dump"
        try:
            _, errors = self._debugfs(f"dump {debugfs_quoted(path)} {dumped}")
            if not dumped.exists():
                raise UserError(f"cannot read {path} from '{self.source.image}' ({errors.strip()})",
                                "check the image with e2fsck")
            return dumped.read_bytes()
        finally:
            dumped.unlink(missing_ok=True)
