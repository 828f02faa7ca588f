"""Refuse to call a tree done unless it will boot in its init mode."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from osbuilder.foundation.arch import Arch
from osbuilder.foundation.errors import BuildError, UserError
from osbuilder.foundation.fsutil import GuestRoot
from osbuilder.foundation.guest_layout import INIT_PATH, SUMMARY_PATH
from osbuilder.rootfs.initmode import InstalledAgent, get_init_mode
from osbuilder.rootfs.agent import AgentBinary
from osbuilder.rootfs.closure import check_closure
from osbuilder.rootfs.summary import parse_summary, recorded_agent, recorded_extension
from osbuilder.read.view import GuestView


def read_tree_summary(guest: GuestRoot) -> dict | None:
    """The tree's parsed osbuilder.yaml, or None when it has none."""
    path = guest.resolve(SUMMARY_PATH)
    if not path.is_file():
        return None
    return parse_summary(path.read_text(errors="replace"), source=f"{guest.root}{SUMMARY_PATH}")


def validate_tree(guest: GuestRoot, init_mode: str, target: Arch, agent: AgentBinary | None = None,
                  require_summary: bool = True, tools: tuple[str, ...] = (), allow_setuid: bool = False,
                  base: GuestView | None = None) -> None:
    """Check the facts every guest must satisfy; `agent` pins the binary that must be installed,
    `tools` names commands the guest must have. Everything that can run must find what it needs
    (in an extension image, there or in its `base`)."""
    mode = get_init_mode(init_mode)
    if mode.holds_agent and not guest.resolve(INIT_PATH).is_file():
        raise BuildError(f"{INIT_PATH} does not exist in {guest.root}", "the tree cannot boot; rebuild it")
    summary = read_tree_summary(guest)
    recorded = recorded_agent(summary)
    probe = agent.probe if agent is not None else recorded.get("probe") == "yes"
    # The binary that must be installed: the one given, else (for osbuilder's own probe, whose
    # bytes are known) the digest the tree records.
    pinned = agent.sha256 if agent is not None else str(recorded.get("sha256")) if probe else None
    launcher = recorded.get("launcher-sha256")
    mode.validate(guest, target, InstalledAgent(pinned, probe, str(launcher) if launcher else None))
    if require_summary:
        if summary is None:
            raise BuildError(f"{SUMMARY_PATH} is missing", "rebuild the tree")
        if any(recorded.get(key) != value for key, value in mode.summary_fields().items()):
            raise BuildError(f"{SUMMARY_PATH} does not record init mode {init_mode}", "rebuild the tree")
    if not mode.holds_agent and not allow_setuid and recorded_extension(summary).get("allow-setuid") != "yes":
        check_no_setuid(guest)
    check_closure(guest, tools, base)


def check_no_setuid(guest: GuestRoot) -> None:
    """An extension's files join a running guest: none may raise privileges unless allowed."""
    found = []
    for directory, _, files in os.walk(guest.root):
        for name in files:
            path = os.path.join(directory, name)
            if os.lstat(path).st_mode & (stat.S_ISUID | stat.S_ISGID):
                found.append(guest.guest_path_of(Path(path)))
    if found:
        shown = ", ".join(sorted(found)[:3]) + (f" (and {len(found) - 3} more)" if len(found) > 3 else "")
        raise UserError(f"the extension holds setuid or setgid files: {shown}",
                        "remove them (or the packages that ship them), or pass --allow-setuid")
