"""Packing a guest tree into an initrd: sorted newc cpio, streamed through a compressor."""

from __future__ import annotations

from pathlib import Path

from osbuilder.artifact import Artifact
from osbuilder.guest_tree import GuestTree
from osbuilder.pack.compress import compressing, get_codec
from osbuilder.pack.cpio import Entry, archive_tree
from osbuilder.runner import Runner
from osbuilder.tools import HostTools

INITRD_NAME = "kata-containers-initrd.img"
# What /init points at. The kernel runs /init from an initramfs and copes badly with long
# link chains, so it points straight at the real binary.
INIT_TARGETS = {"agent": "/sbin/init", "systemd": "/lib/systemd/systemd"}


def pack_initrd(tree: GuestTree, output: Path, compression: str, level: int | None,
                tools: HostTools, runner: Runner) -> Artifact:
    """Write the initrd to `output` (a path the caller stages); the tree is only read."""
    codec = get_codec(compression)
    level = codec.check_level(level)
    init = Entry.symlink("init", INIT_TARGETS[tree.init_mode], mtime=tree.epoch)
    with open(output, "wb") as out:
        with compressing(codec, level, out, tools, runner) as stream:
            count = archive_tree(tree.root, stream, tree.epoch, extra=[init])
    return Artifact(path=output, format="initrd", size=output.stat().st_size,
                    details={"compression": codec.name, "level": level, "entries": count,
                             "kernel_config": codec.kernel_config, "init_mode": tree.init_mode})
