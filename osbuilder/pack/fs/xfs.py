"""xfs from a protofile osbuilder generates (mkfs.xfs -p)."""

from __future__ import annotations

import datetime
import os
import re
import stat
from pathlib import Path
from typing import TextIO

from osbuilder.foundation.errors import UserError
from osbuilder.foundation.guest_layout import MACHINE_ID
from osbuilder.pack.fs.base import Filesystem, FsRequest, FsSource
from osbuilder.pack.sizing import TreeStats
from osbuilder.read.view import GuestView, Node, node_of
from osbuilder.foundation.runner import FILESYSTEM, PROBE, Runner

_BMAP = re.compile(r"data offset (\d+) startblock \d+ \((\d+)/(\d+)\) count (\d+)")


class Xfs(Filesystem):
    """xfs from a protofile. mkfs.xfs 6.1 stamps inodes with the clock and has no option to
    fix it, so it runs under a frozen libfaketime clock set to the epoch."""

    name = "xfs"
    magic = (0, b"XFSB")
    kernel_module = "xfs"
    dax_rootflags = "dax"
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
            write_protofile(request.tree, out, empty, sticky, machine_id=request.machine_id)
        when = datetime.datetime.fromtimestamp(request.epoch, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        # mkfs.xfs 6.1 corrupts the filesystem when a protofile source is larger than an
        # allocation group, so the groups are made large enough (2 to 4 of them).
        assert request.size is not None
        agcount = max(2, min(4, request.size // self.min_ag_bytes(request.stats.largest_file_bytes)))
        runner.run(["faketime", "-f", when, "mkfs.xfs", "-q", "-f", "-b", f"size={request.block_size}",
                    "-d", f"agcount={agcount}",
                    "-m", f"reflink=0,uuid={request.uuid}", "-p", str(proto), str(request.image)],
                   env={"TZ": "UTC"}, limit=FILESYSTEM)
        # Protofiles cannot express the sticky bit; set it afterwards on the inodes that had it.
        for path, mode in sticky:
            runner.run(["xfs_db", "-x", "-c", f"path {path}", "-c", f"write core.mode 0{mode:o}", str(request.image)], limit=FILESYSTEM)


    def open_view(self, source: FsSource, runner: Runner) -> GuestView:
        return XfsView(source.copy_out("partition.xfs"), runner, str(source.image))

def _proto_mode(st: os.stat_result) -> str:
    kind = {stat.S_IFREG: "-", stat.S_IFDIR: "d", stat.S_IFLNK: "l", stat.S_IFCHR: "c",
            stat.S_IFBLK: "b", stat.S_IFIFO: "p"}[stat.S_IFMT(st.st_mode)]
    setuid = "u" if st.st_mode & stat.S_ISUID else "-"
    setgid = "g" if st.st_mode & stat.S_ISGID else "-"
    return f"{kind}{setuid}{setgid}{st.st_mode & 0o777:03o} {st.st_uid} {st.st_gid}"


def write_protofile(root: Path, out: TextIO, empty: Path, sticky: list[tuple[str, int]], guest_dir: str = "",
                    depth: int = 0, machine_id: bool = True) -> None:
    """One protofile block per directory, entries sorted; recursion follows the tree."""
    st = os.lstat(root)
    if depth == 0:
        out.write(_proto_mode(st) + "\n")
    names = sorted(os.listdir(root), key=os.fsencode)
    if machine_id and guest_dir == "/etc" and "machine-id" not in names:
        names = sorted(names + ["machine-id"], key=os.fsencode)
    indent = " " * (depth + 1)
    for name in names:
        path = Path(root, name)
        guest_path = f"{guest_dir}/{name}"
        if any(c.isspace() for c in name):
            raise UserError(f"xfs cannot hold the name {guest_path!r}: mkfs.xfs protofiles split names at spaces",
                            "rename it, or use --fs ext4 or --fs erofs")
        if machine_id and guest_path == MACHINE_ID:
            out.write(f"{indent}machine-id ---444 0 0 {empty}\n")
            continue
        st = os.lstat(path)
        mode = _proto_mode(st)
        if st.st_mode & stat.S_ISVTX:
            sticky.append((guest_path, stat.S_IFMT(st.st_mode) | stat.S_IMODE(st.st_mode)))
        if stat.S_ISDIR(st.st_mode):
            out.write(f"{indent}{name} {mode}\n")
            write_protofile(path, out, empty, sticky, guest_path, depth + 1, machine_id)
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


class XfsView(GuestView):
    """An xfs filesystem read with xfs_db (which takes no offset, so it reads a copy of the
    partition): paths, modes, symlink targets and block maps; file bytes are read straight
    from the copy at the blocks the map names."""

    def __init__(self, fs: Path, runner: Runner, where: str) -> None:
        self.fs = fs
        self.runner = runner
        self.where = where
        geometry = self._db("sb 0", "print blocksize agblocks")
        try:
            self.block = int(geometry["blocksize"])
            self.agblocks = int(geometry["agblocks"])
        except (KeyError, ValueError):  # a zeroed or damaged superblock: xfs_db prints no geometry
            raise UserError(f"the xfs file system in '{where}' has no readable superblock",
                            "check the image with xfs_repair -n") from None
        if self.block <= 0 or self.agblocks <= 0:
            raise UserError(f"the xfs file system in '{where}' has a damaged superblock",
                            "check the image with xfs_repair -n")

    def _run(self, *commands: str) -> str:
        argv = ["xfs_db", "-r"]
        for command in commands:
            argv += ["-c", command]
        return self.runner.run([*argv, str(self.fs)], check=False, limit=PROBE).stdout

    def _db(self, *commands: str) -> dict[str, str]:
        return dict(re.findall(r"^([\w.]+) = (.*)$", self._run(*commands), re.M))

    def used_bytes(self) -> int | None:
        fields = self._db("sb 0", "print dblocks fdblocks")
        try:
            return (int(fields["dblocks"]) - int(fields["fdblocks"])) * self.block
        except (KeyError, ValueError):
            return None

    def _lstat(self, path: str) -> Node | None:
        fields = self._db(f"path {path}", "print core.mode core.size")
        if "core.mode" not in fields:
            return None
        try:
            return node_of(int(fields["core.mode"], 8), int(fields.get("core.size", "0")))
        except ValueError:
            raise UserError(f"the xfs file system in '{self.where}' has a damaged inode at {path}",
                            "check the image with xfs_repair -n") from None

    def _readlink(self, path: str) -> str:
        fields = self._db(f"path {path}", "print u3.symlink")
        if "u3.symlink" in fields:
            return fields["u3.symlink"].strip('"')
        return self._read(path).decode(errors="surrogateescape")  # a remote symlink: its blocks

    def _listdir(self, path: str) -> list[str]:
        names = []
        for line in self._run(f"ls {path}").splitlines()[1:]:
            parts = line.split(None, 5)
            if len(parts) == 6:
                names.append(parts[5].removesuffix(" (good)"))
        return sorted(name for name in names if name not in (".", ".."))

    def _read(self, path: str) -> bytes:
        out = self._run(f"path {path}", "print core.size", "bmap")
        size = int(re.search(r"^core\.size = (\d+)$", out, re.M).group(1))
        data = bytearray(size)
        with open(self.fs, "rb") as f:
            for offset, agno, agbno, count in (map(int, m) for m in _BMAP.findall(out)):
                f.seek((agno * self.agblocks + agbno) * self.block)
                start = offset * self.block
                piece = f.read(count * self.block)[: max(0, size - start)]
                data[start:start + len(piece)] = piece
        return bytes(data)

    def close(self) -> None:
        self.fs.unlink(missing_ok=True)
