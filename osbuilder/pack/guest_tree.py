"""An existing guest tree given to a packer: what it says about itself, checked.

Packers take trees users may have customised. Before packing, the tree must still boot in
the init mode it will be packed for, and its agent must fit the architecture.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osbuilder.foundation.arch import Arch, arch_of_elf, get_arch
from osbuilder.foundation.elf import read_elf_header
from osbuilder.foundation.epoch import build_epoch
from osbuilder.foundation.errors import BuildError, UserError
from osbuilder.foundation.fsutil import GuestRoot, TreeListing, first_unreadable
from osbuilder.foundation.privilege import Privilege
from osbuilder.foundation.guest_layout import INIT_PATH, SUMMARY_PATH
from osbuilder.rootfs.initmode import INIT_MODES, InitMode, get_init_mode
from osbuilder.read.view import GuestView
from osbuilder.rootfs.summary import recorded_agent
from osbuilder.rootfs.validate import read_tree_summary, validate_tree
from osbuilder.foundation.verified import VerifiedTrees

log = logging.getLogger("osbuilder")


@dataclass(frozen=True)
class GuestTree:
    root: Path
    mode: InitMode
    arch: Arch
    summary: dict[str, Any] | None  # parsed osbuilder.yaml, when the tree has one
    epoch: int  # clamp for every timestamp written while packing
    # The one walk of the tree's metadata that checking and packing it share.
    listing: TreeListing = field(compare=False)

    @property
    def init_mode(self) -> str:
        return self.mode.name

    @property
    def cgroup_driver(self) -> str:
        return self.mode.cgroup_driver

    @property
    def extension_name(self) -> str | None:
        """The name an extension image records (None for a base)."""
        if self.mode.holds_agent:
            return None
        recorded = (self.summary or {}).get("extension")
        name = recorded.get("name") if isinstance(recorded, dict) else None
        if not isinstance(name, str) or not name:
            raise UserError(f"rootfs '{self.root}' is an extension image that records no name",
                            "rebuild it with osbuilder rootfs --init none --extension NAME")
        return name


def _tree_arch(guest: GuestRoot, summary: dict[str, Any] | None, given: str | None) -> Arch:
    """--arch, else the recorded architecture, else the ELF header of what /sbin/init runs."""
    recorded = (summary or {}).get("architecture")
    if given:
        arch = get_arch(given)
        if isinstance(recorded, str) and recorded and get_arch(recorded) != arch:
            raise UserError(f"rootfs '{guest.root}' was built for {recorded}, not {arch.name}",
                            f"drop --arch, or pass --arch {recorded}")
        return arch
    if isinstance(recorded, str) and recorded:
        return get_arch(recorded)
    found = arch_of_elf(read_elf_header(guest.resolve(INIT_PATH))) if guest.resolve(INIT_PATH).is_file() else None
    if found is None:
        raise UserError(f"rootfs '{guest.root}' does not record its architecture ({SUMMARY_PATH} is missing)",
                        "pass --arch")
    return found


def open_guest_tree(root: Path, init_mode: str | None, arch: str | None, privilege: Privilege,
                    base: GuestView | None = None, verified: VerifiedTrees | None = None,
                    just_checked: bool = False) -> GuestTree:
    """Check a tree for packing. The init mode comes from --init or the tree's osbuilder.yaml.
    The checks (the closure check the costly one) are not repeated on a tree this process
    `just_checked` (build's own), nor on one `verified` records unchanged since it passed the
    same checks; a tree that passes here is recorded there."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"rootfs '{root}' does not exist or is not a directory", "pass the directory osbuilder rootfs wrote")
    unreadable = first_unreadable(root, privilege.reads_everything)
    if unreadable is not None:
        raise UserError(f"rootfs '{root}': cannot read {unreadable} (permission denied)",
                        "pack the tree as root, or as a user who can read all of it")
    guest = GuestRoot(root)
    summary = read_tree_summary(guest)
    recorded = recorded_agent(summary).get("init-mode")
    holds_agent = get_init_mode(str(init_mode or recorded)).holds_agent if (init_mode or recorded) in INIT_MODES \
        else True
    if holds_agent and not guest.resolve(INIT_PATH).is_file():
        raise UserError(f"rootfs '{root}' has no {INIT_PATH}", "the tree cannot boot; build it with osbuilder rootfs")
    if init_mode is None:
        if recorded not in INIT_MODES:
            raise UserError(f"rootfs '{root}' does not record its init mode ({SUMMARY_PATH} is missing)",
                            f"pass --init {' or --init '.join(INIT_MODES)}")
        init_mode = str(recorded)
    elif recorded is not None and recorded != init_mode:
        raise UserError(f"rootfs '{root}' was built for init mode '{recorded}', not '{init_mode}'",
                        f"drop --init, or rebuild the tree with --init {init_mode}")
    target = _tree_arch(guest, summary, arch)
    listing = TreeListing(root)
    checked, digest = just_checked, None
    if just_checked:
        log.debug("rootfs '%s' was checked by this build: its closure check is not repeated", root)
    elif verified is not None and base is None:
        digest, checked = verified.look_up(listing, init_mode, target.name)
        if checked:
            log.debug("rootfs '%s' is unchanged since osbuilder checked it (verified digest %s...): its closure check "
                      "is skipped", root, digest[:16])
    if not checked:  # what passed before is a tree the same checks would pass now: none is repeated
        try:
            # Only osbuilder's own summary records the init mode; upstream's (agent-is-init-daemon
            # alone) is packed like a tree without one.
            validate_tree(guest, init_mode, target, require_summary=recorded is not None, base=base)
        except BuildError as exc:
            raise UserError(f"rootfs '{root}': {exc.message}", exc.hint) from None
        if verified is not None and base is None:
            verified.remember(listing, init_mode, target.name, digest)
    return GuestTree(root=root, mode=get_init_mode(init_mode), arch=target, summary=summary,
                     epoch=build_epoch(summary), listing=listing)
