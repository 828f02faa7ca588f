"""An existing guest tree given to a packer: what it says about itself, checked.

Packers (`initrd`, `image`, `iso`) take trees users may have customised. Before packing,
the tree must still boot in the init mode it will be packed for.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osbuilder.arch import Arch, get_arch, host_arch
from osbuilder.config import source_date_epoch_from_env
from osbuilder.errors import BuildError, UserError
from osbuilder.fsutil import GuestRoot
from osbuilder.provision import INIT_PATH
from osbuilder.recipes import INIT_MODES
from osbuilder.summary import SUMMARY_PATH, cgroup_driver_for, parse_summary
from osbuilder.validate import validate_tree


@dataclass(frozen=True)
class GuestTree:
    root: Path
    init_mode: str
    arch: Arch
    summary: dict[str, Any] | None  # parsed osbuilder.yaml, when the tree has one
    epoch: int  # clamp for every timestamp written while packing

    @property
    def cgroup_driver(self) -> str:
        return cgroup_driver_for(self.init_mode)


def _creation_epoch(summary: dict[str, Any] | None) -> int | None:
    text = (summary or {}).get("rootfs-creation-time")
    if not text:
        return None
    try:
        when = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None
    return int(when.timestamp())


def open_guest_tree(root: Path, init_mode: str | None) -> GuestTree:
    """Check a tree for packing. The init mode comes from --init or the tree's osbuilder.yaml.

    The packing epoch is SOURCE_DATE_EPOCH, else the creation time the tree records, else
    0: derived from the input, never from the packing host's clock."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"rootfs '{root}' does not exist or is not a directory", "pass the directory osbuilder rootfs wrote")
    guest = GuestRoot(root)
    if not guest.resolve(INIT_PATH).is_file():
        raise UserError(f"rootfs '{root}' has no {INIT_PATH}", "the tree cannot boot; build it with osbuilder rootfs")
    summary_file = guest.resolve(SUMMARY_PATH)
    summary = parse_summary(summary_file.read_text()) if summary_file.is_file() else None
    recorded = ((summary or {}).get("agent") or {}).get("init-mode")
    if init_mode is None:
        if recorded not in INIT_MODES:
            raise UserError(f"rootfs '{root}' does not record its init mode ({SUMMARY_PATH} is missing)",
                            "pass --init agent or --init systemd")
        init_mode = recorded
    elif recorded is not None and recorded != init_mode:
        raise UserError(f"rootfs '{root}' was built for init mode '{recorded}', not '{init_mode}'",
                        f"drop --init, or rebuild the tree with --init {init_mode}")
    arch = get_arch(summary["architecture"]) if summary and summary.get("architecture") else host_arch()
    try:
        validate_tree(guest, init_mode, arch, require_summary=summary is not None)
    except BuildError as exc:
        raise UserError(f"rootfs '{root}': {exc.message}", exc.hint) from None
    epoch = source_date_epoch_from_env()
    if epoch is None:
        epoch = _creation_epoch(summary) or 0
    return GuestTree(root=root, init_mode=init_mode, arch=arch, summary=summary, epoch=epoch)
