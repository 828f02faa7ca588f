"""Stage 3: refuse to call a tree done unless it will boot in its init mode."""

from __future__ import annotations

import os
import stat

from osbuilder.agent import AgentBinary, check_agent, sha256_file
from osbuilder.arch import Arch
from osbuilder.errors import BuildError, UserError
from osbuilder.fsutil import GuestRoot
from osbuilder.probe import PROBE_SHELL, check_probe
from osbuilder.provision import AGENT_MODE_DEVICES, AGENT_PATH, INIT_PATH
from osbuilder.summary import SUMMARY_PATH, cgroup_driver_for, parse_summary
from osbuilder.systemd_units import pulls_in, unit_exists

SYSTEMD_BINARIES = ("/usr/lib/systemd/systemd", "/lib/systemd/systemd")


def installed_systemd(guest: GuestRoot) -> str | None:
    for path in SYSTEMD_BINARIES:
        if guest.resolve(path).is_file():
            return path
    return None


def validate_tree(guest: GuestRoot, init_mode: str, target: Arch, agent: AgentBinary | None = None,
                  require_summary: bool = True) -> None:
    """Check the facts every guest must satisfy; `agent` pins the binary that must be installed."""
    init = guest.resolve(INIT_PATH)
    if not init.is_file():
        raise BuildError(f"{INIT_PATH} does not exist in {guest.root}", "the tree cannot boot; rebuild it")
    recorded = _recorded_agent(guest)
    probe = agent.probe if agent is not None else recorded.get("probe") == "yes"
    # The binary that must be installed: the one given, else (for osbuilder's own probe, whose
    # bytes are known) the digest the tree records.
    pinned = agent.sha256 if agent is not None else str(recorded.get("sha256")) if probe else None
    if init_mode == "agent":
        _validate_agent_mode(guest, init, target, pinned, probe)
    else:
        _validate_systemd_mode(guest, init, target, pinned, probe)
    if require_summary:
        _validate_summary(guest, init_mode)


def _recorded_agent(guest: GuestRoot) -> dict:
    path = guest.resolve(SUMMARY_PATH)
    return (parse_summary(path.read_text()).get("agent") or {}) if path.is_file() else {}


def _check_installed(guest: GuestRoot, path, target: Arch, pinned: str | None, probe: bool, where: str) -> None:
    if probe:
        if not guest.exists(PROBE_SHELL):
            raise BuildError(f"the probe agent is a shell script, but the guest has no {PROBE_SHELL}",
                             "add a shell to the guest's packages, or install a real agent")
        check_probe(path, pinned)
        return
    installed = check_agent(path, target)
    if pinned is not None and installed.sha256 != pinned:
        raise BuildError(f"{where} is not the agent that was installed", "rebuild the tree")


def _validate_agent_mode(guest: GuestRoot, init, target: Arch, pinned: str | None, probe: bool) -> None:
    systemd = installed_systemd(guest)
    if systemd is not None:
        if os.path.samefile(init, guest.resolve(systemd)) or sha256_file(init) == sha256_file(guest.resolve(systemd)):
            raise BuildError(f"init mode is agent but {INIT_PATH} is systemd", "rebuild with --init systemd")
        raise UserError(f"init mode is agent but systemd is installed ({systemd})",
                        "drop the package that pulls in systemd from --extra-packages, or use --init systemd")
    _check_installed(guest, init, target, pinned, probe, INIT_PATH)
    for name, major, minor in AGENT_MODE_DEVICES:
        path = guest.resolve(f"/dev/{name}", follow_final=False)
        try:
            st = path.lstat()
        except FileNotFoundError:
            raise BuildError(f"device node /dev/{name} is missing", "rebuild the tree as root") from None
        if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != (major, minor):
            raise BuildError(f"/dev/{name} is not the character device {major}:{minor}", "rebuild the tree")


def _validate_systemd_mode(guest: GuestRoot, init, target: Arch, pinned: str | None, probe: bool) -> None:
    systemd = installed_systemd(guest)
    if systemd is None:
        raise BuildError("init mode is systemd but systemd is not installed",
                         "the recipe must install systemd (Debian: the 'init' package) in systemd mode")
    if not os.path.samefile(init, guest.resolve(systemd)):
        raise BuildError(f"init mode is systemd but {INIT_PATH} is not systemd", "rebuild with --init agent")
    agent_file = guest.resolve(AGENT_PATH)
    if not agent_file.is_file():
        raise BuildError(f"the agent is missing at {AGENT_PATH}", "rebuild the tree")
    _check_installed(guest, agent_file, target, pinned, probe, AGENT_PATH)
    if not pulls_in(guest, "basic.target", "kata-agent.service"):
        raise BuildError("kata-agent.service is not reachable from basic.target", "rebuild the tree")
    if not unit_exists(guest, "dbus.socket"):
        raise BuildError("systemd mode needs D-Bus for the agent's systemd cgroup driver, but dbus.socket is missing",
                         "add dbus to the recipe's packages")


def _validate_summary(guest: GuestRoot, init_mode: str) -> None:
    path = guest.resolve(SUMMARY_PATH)
    if not path.is_file():
        raise BuildError(f"{SUMMARY_PATH} is missing", "rebuild the tree")
    agent = parse_summary(path.read_text()).get("agent") or {}
    if agent.get("init-mode") != init_mode or agent.get("cgroup-driver") != cgroup_driver_for(init_mode):
        raise BuildError(f"{SUMMARY_PATH} does not record init mode {init_mode}", "rebuild the tree")
