"""erofs with mkfs.erofs (lz4hc, no inline data)."""

from __future__ import annotations

import struct

from osbuilder.foundation.fsutil import GuestRoot, remove_tree
from osbuilder.foundation.guest_layout import MACHINE_ID
from osbuilder.pack.fs.base import Filesystem, FsRequest, FsSource
from osbuilder.pack.sizing import TreeStats
from osbuilder.read.view import DirView, GuestView
from osbuilder.foundation.runner import FILESYSTEM, Runner


class Erofs(Filesystem):
    name = "erofs"
    magic = (1024, struct.pack("<I", 0xE0F5E1E2))
    kernel_module = "erofs"
    dax_rootflags = "dax=always"
    content_sized = True

    def needed_bytes(self, stats: TreeStats) -> int:
        return stats.content_bytes  # an upper bound: the image is made first and measured

    def make(self, request: FsRequest, runner: Runner) -> None:
        mkfs = ["mkfs.erofs", "--quiet", "-zlz4hc", "-Enoinline_data", f"-T{request.epoch}", f"-U{request.uuid}",
                str(request.image)]
        if not request.adds_machine_id:
            runner.run([*mkfs, str(request.tree)], limit=FILESYSTEM)
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
        fakeroot = runner.privilege.owner_recording()
        runner.run([*fakeroot, "bash", "-euo", "pipefail", "-c", _EROFS_COPY_SCRIPT, "erofs-copy",
                    str(request.tree), str(copy), str(machine_id), *mkfs, str(copy)], limit=FILESYSTEM)


    def open_view(self, source: FsSource, runner: Runner) -> GuestView:
        # erofs compresses file data and its tools read no single file: fsck.erofs extracts
        # the tree to scratch space, and the view reads it there.
        fs = source.copy_out("partition.erofs")
        extracted = source.workdir / "erofs-tree"
        try:
            # No file it writes may pass what a view reads (a small image can claim huge files).
            runner.run(["prlimit", f"--fsize={GuestView.READ_LIMIT}", "fsck.erofs", f"--extract={extracted}",
                        "--no-preserve", str(fs)], limit=FILESYSTEM,
                       hint=f"the erofs file system in '{source.image}' is damaged, or holds a file larger than "
                            f"{GuestView.READ_LIMIT >> 20} MiB")
        except BaseException:
            remove_tree(extracted)
            raise
        finally:
            fs.unlink()
        return DirView(extracted, scratch=extracted)

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
