"""Init modes as objects: how the agent starts, and everything that follows from it.

Each mode owns what it installs and where, how a tree is checked against it, what an
initrd's /init points at, the cgroup driver it implies (docs/kata-contract.md, the cgroup-driver rule), the fields
it records in osbuilder.yaml, how it is recognised in a tree that does not record it, and
what the probe must report when it boots. Nothing else in osbuilder compares a mode's name
(tests/unit/test_structure.py enforces it).
"""

from __future__ import annotations

import os
import stat
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from osbuilder.foundation.arch import Arch
from osbuilder.foundation.cgroups import CGROUPFS_DRIVER, FOLLOWS_HOST
from osbuilder.foundation.elf import parse_elf_header
from osbuilder.foundation.errors import BuildError, UserError, lookup
from osbuilder.foundation.fsutil import GuestRoot, sha256_file
from osbuilder.foundation.guest_layout import (AGENT_PATH, ETC_UNIT_DIR, INIT_PATH, SHELL, SYSTEMD_BINARIES,
                                    SYSTEMD_BINARY, UNIT_DIR)
from osbuilder.read.view import GuestView
from osbuilder.rootfs.agent import AgentBinary, check_agent
from osbuilder.rootfs.extension_mount import check_extension_mount, install_extension_mount
from osbuilder.rootfs.libraries import check_libraries
from osbuilder.rootfs.probe import check_probe, is_probe_script
from osbuilder.rootfs.systemd_units import pulls_in, unit_exists
from osbuilder.foundation.settings import setting

if TYPE_CHECKING:  # jinja2 is imported by what renders, not by what checks
    from osbuilder.foundation.templates import Templates

# What inspect reports when no mode recognises the tree.
UNKNOWN_MODE = "unknown"


@dataclass(frozen=True)
class InstalledAgent:
    """What must be installed: the binary's digest when it is known, and whether it is the probe."""

    sha256: str | None
    probe: bool
    launcher_sha256: str | None = None  # the launcher mode's /sbin/init, when recorded


def installed_systemd(guest: GuestRoot) -> str | None:
    for path in SYSTEMD_BINARIES:
        if guest.resolve(path).is_file():
            return path
    return None


def _check_installed(guest: GuestRoot, path: Path, target: Arch, expected: InstalledAgent, where: str) -> None:
    if expected.probe:
        if not guest.exists(SHELL):
            raise BuildError(f"the probe agent is a shell script, but the guest has no {SHELL}",
                             "add a shell to the guest's packages, or install a real agent")
        check_probe(path, expected.sha256)
        return
    installed = check_agent(path, target)
    if expected.sha256 is not None and installed.sha256 != expected.sha256:
        raise BuildError(f"{where} is not the agent that was installed", "rebuild the tree")
    check_libraries(guest, guest.guest_path_of(path), f"the agent ({where})")


@dataclass(frozen=True)
class InitInputs:
    """What installing an init mode takes besides the agent."""

    trim_systemd: bool = False
    launcher: Path | None = None  # the launcher mode's /sbin/init


class InitMode(ABC):
    """How the agent starts, and what follows from it for the host's cgroup driver."""

    name: ClassVar[str]
    help: ClassVar[str]
    agent_is_init: ClassVar[bool]  # the agent is PID 1
    runs_systemd: ClassVar[bool]  # systemd is PID 1, so the systemd cgroup driver can work
    agent_path: ClassVar[str]  # where the agent binary is installed
    initrd_init_target: ClassVar[str]  # what an initrd's /init links to
    # dracut modules that give a tree built from the host (--method dracut) what this mode runs.
    dracut_modules: ClassVar[tuple[str, ...]] = ("bash", "base")
    takes_launcher: ClassVar[bool] = False  # installs --launcher as /sbin/init
    holds_agent: ClassVar[bool] = True  # False: an extension image, mounted by a base (no agent, no init)
    # The base mounts extension images (docs/kata-contract.md, composable guests): its systemd runs Kata's
    # generator and kata-extension-mount@.service before the agent.
    mounts_extensions: ClassVar[bool] = False
    # The order in which modes are asked to recognise a tree that records none: the lowest
    # first, so a mode whose mark is specific goes before one that takes what is left.
    recognition_rank: ClassVar[int] = 50

    @abstractmethod
    def observed_in(self, view: GuestView) -> str | None:
        """Why a tree looks like this mode (what its /sbin/init is), or None when it does not."""

    def probe_mismatch(self, probe: dict[str, object]) -> str | None:
        """What the probe reported at boot that this mode rules out, or None."""
        for key, expected in (("init_mode", self.agent_is_init), ("systemd", self.runs_systemd)):
            if key in probe and probe[key] != expected:
                return f"{key}={str(probe[key]).lower()}"
        return None

    @property
    def cgroup_driver(self) -> str:
        """The driver recorded in the image: fixed, or FOLLOWS_HOST."""
        return self.guest_cgroup_driver(None)

    def guest_cgroup_driver(self, host_driver: str | None) -> str:
        """The driver the agent uses for containers when the host asks for `host_driver`:
        as PID 1 it forces cgroupfs (there is no systemd to ask); otherwise it follows the host."""
        if self.agent_is_init:
            return CGROUPFS_DRIVER
        return host_driver or FOLLOWS_HOST

    def summary_fields(self) -> dict[str, str]:
        return {"agent-is-init-daemon": "yes" if self.agent_is_init else "no", "init-mode": self.name,
                "cgroup-driver": self.cgroup_driver}

    @abstractmethod
    def install(self, guest: GuestRoot, agent: AgentBinary, templates: Templates, inputs: InitInputs) -> None:
        """Put the agent and what starts it into the tree."""

    @abstractmethod
    def validate(self, guest: GuestRoot, target: Arch, expected: InstalledAgent) -> None:
        """Raise unless the tree boots in this mode with the expected agent."""


# PID 1 needs stdio before it can mount devtmpfs: (name, major, minor, mode).
PID1_DEVICES = (("console", 5, 1, 0o600), ("tty", 5, 0, 0o666), ("ttyS0", 4, 64, 0o600), ("null", 1, 3, 0o666),
                ("zero", 1, 5, 0o666))
PID1_DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                  ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))


def _is_systemd(view: GuestView) -> bool:
    """The tree's /sbin/init is one of systemd's binaries."""
    if view.stat(INIT_PATH) is None:
        return False
    target = view.resolve(INIT_PATH)
    return any(view.stat(path) is not None and view.resolve(path) == target for path in SYSTEMD_BINARIES)


def _install_pid1_devices(guest: GuestRoot) -> None:
    for name, major, minor, mode in PID1_DEVICES:
        guest.mknod_char(f"/dev/{name}", major, minor, mode)
    for name, target in PID1_DEV_LINKS:
        guest.symlink(f"/dev/{name}", target)


def _check_pid1_devices(guest: GuestRoot) -> None:
    for name, major, minor, _ in PID1_DEVICES:
        path = guest.resolve(f"/dev/{name}", follow_final=False)
        try:
            st = path.lstat()
        except FileNotFoundError:
            raise BuildError(f"device node /dev/{name} is missing", "rebuild the tree as root") from None
        if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != (major, minor):
            raise BuildError(f"/dev/{name} is not the character device {major}:{minor}", "rebuild the tree")


def _check_no_systemd(guest: GuestRoot, mode: str) -> None:
    systemd = installed_systemd(guest)
    if systemd is None:
        return
    init = guest.resolve(INIT_PATH)
    if os.path.samefile(init, guest.resolve(systemd)) or sha256_file(init) == sha256_file(guest.resolve(systemd)):
        raise BuildError(f"init mode is {mode} but {INIT_PATH} is systemd", "rebuild with --init systemd")
    raise UserError(f"init mode is {mode} but systemd is installed ({systemd})",
                    "drop the package that pulls in systemd from --extra-packages, or use --init systemd")


class AgentInit(InitMode):
    name = "agent"
    help = "the agent is /sbin/init (PID 1); no systemd"
    agent_is_init = True
    runs_systemd = False
    agent_path = INIT_PATH
    initrd_init_target = INIT_PATH
    recognition_rank = 10

    def observed_in(self, view: GuestView) -> str | None:
        data = view.read_file(INIT_PATH)
        if data is None or _is_systemd(view):
            return None
        if is_probe_script(data):
            return f"{INIT_PATH} is osbuilder's probe agent"
        other = view.read_file(AGENT_PATH)
        if parse_elf_header(data[:20]) is not None and (other is None or other == data):
            return f"{INIT_PATH} is an ELF executable and the guest has no other agent"
        return None

    def install(self, guest: GuestRoot, agent: AgentBinary, templates: Templates, inputs: InitInputs) -> None:
        guest.copy_file(agent.path, self.agent_path, 0o755)
        _install_pid1_devices(guest)

    def validate(self, guest: GuestRoot, target: Arch, expected: InstalledAgent) -> None:
        _check_no_systemd(guest, self.name)
        _check_installed(guest, guest.resolve(INIT_PATH), target, expected, INIT_PATH)
        _check_pid1_devices(guest)


class LauncherInit(InitMode):
    """Kata's GPU guests (docs/kata-contract.md, the cgroup-driver rule): a small init such as NVIDIA's NVRC is PID 1,
    prepares devices and starts the agent; there is no systemd. The agent is not PID 1, so it
    follows the host's cgroup driver, and only cgroupfs can work."""

    name = "launcher"
    help = "a launcher (--launcher FILE, e.g. NVIDIA's NVRC) is /sbin/init and starts the agent; no systemd"
    agent_is_init = False
    runs_systemd = False
    agent_path = AGENT_PATH
    initrd_init_target = INIT_PATH
    takes_launcher = True
    recognition_rank = 90  # whatever else starts an agent that is not PID 1, without systemd
    CGROUP_DRIVER = "cgroupfs-only"

    @property
    def cgroup_driver(self) -> str:
        return self.CGROUP_DRIVER

    def observed_in(self, view: GuestView) -> str | None:
        init = view.read_file(INIT_PATH)
        agent = view.read_file(AGENT_PATH)
        if init is None or agent is None or init == agent or _is_systemd(view):
            return None
        return f"{INIT_PATH} is neither the agent ({AGENT_PATH}) nor systemd"

    def install(self, guest: GuestRoot, agent: AgentBinary, templates: Templates, inputs: InitInputs) -> None:
        if inputs.launcher is None:
            raise UserError("init mode launcher needs the launcher", "pass --launcher FILE")
        guest.copy_file(inputs.launcher, INIT_PATH, 0o755)
        guest.copy_file(agent.path, self.agent_path, 0o755)
        _install_pid1_devices(guest)

    def validate(self, guest: GuestRoot, target: Arch, expected: InstalledAgent) -> None:
        _check_no_systemd(guest, self.name)
        init = guest.resolve(INIT_PATH)
        agent_file = guest.resolve(self.agent_path)
        if not agent_file.is_file():
            raise BuildError(f"the agent is missing at {self.agent_path}", "rebuild the tree")
        if sha256_file(init) == sha256_file(agent_file):
            raise BuildError(f"init mode is launcher but {INIT_PATH} is the agent", "rebuild with --init agent")
        if expected.launcher_sha256 is not None and sha256_file(init) != expected.launcher_sha256:
            raise BuildError(f"{INIT_PATH} is not the launcher that was installed", "rebuild the tree")
        check_launcher(guest, init, target)
        _check_installed(guest, agent_file, target, expected, self.agent_path)
        _check_pid1_devices(guest)


def check_launcher(guest: GuestRoot, path: Path, target: Arch) -> None:
    """A launcher is an ELF executable for the target (its libraries in the guest), or a
    script whose interpreter the guest has."""
    with open(path, "rb") as f:
        head = f.read(256)
    if head.startswith(b"#!"):
        interpreter = head[2:].split(b"\n")[0].split()[0].decode(errors="replace") if head[2:].strip() else ""
        if not interpreter or not guest.resolve(interpreter).is_file():
            raise UserError(f"the launcher {INIT_PATH} is a script for {interpreter or 'no interpreter'}, which the "
                            "guest lacks", "add a shell to the guest's packages, or pass an ELF launcher")
        return
    check_agent(path, target)  # the same ELF rules as an agent
    check_libraries(guest, guest.guest_path_of(path), f"the launcher ({INIT_PATH})")


class SystemdInit(InitMode):
    name = "systemd"
    help = "systemd is PID 1 and starts the agent as kata-agent.service"
    agent_is_init = False
    runs_systemd = True
    agent_path = AGENT_PATH
    initrd_init_target = SYSTEMD_BINARY
    dracut_modules = ("bash", "base", "systemd", "dbus")
    recognition_rank = 0

    def observed_in(self, view: GuestView) -> str | None:
        return f"{INIT_PATH} is systemd" if _is_systemd(view) else None
    # Units a sandbox guest never needs (docs/kata-contract.md, release packaging), by base name: Kata's trimming
    # removes every <unit>.service and <unit>.socket, and these files, wherever they are.
    TRIMMABLE_UNITS = (
        "systemd-coredump@", "systemd-journald", "systemd-journald-dev-log", "systemd-journal-flush",
        "systemd-random-seed", "systemd-timesyncd", "systemd-tmpfiles-setup", "systemd-udevd",
        "systemd-udevd-control", "systemd-udevd-kernel", "systemd-udev-trigger", "systemd-update-utmp",
    )
    TRIMMABLE_FILES = (
        "systemd-bless-boot-generator", "systemd-fstab-generator", "systemd-getty-generator",
        "systemd-gpt-auto-generator", "systemd-tmpfiles-cleanup.timer",
    )

    @classmethod
    def trimmed_names(cls) -> frozenset[str]:
        return frozenset({f"{unit}{suffix}" for unit in cls.TRIMMABLE_UNITS for suffix in (".service", ".socket")}
                         | set(cls.TRIMMABLE_FILES))

    mounts_extensions = True

    def install(self, guest: GuestRoot, agent: AgentBinary, templates: Templates, inputs: InitInputs) -> None:
        guest.copy_file(agent.path, self.agent_path, 0o755)
        # Units that came with the agent (Kata's agent tarball) win over osbuilder's templates.
        rendered = {"kata-agent.service": lambda: templates.render("kata-agent.service.j2", agent_path=self.agent_path),
                    "kata-containers.target": lambda: templates.render("kata-containers.target.j2")}
        for unit, render in rendered.items():
            if unit in agent.units:
                guest.copy_file(agent.units[unit], f"{UNIT_DIR}/{unit}", 0o644)
            else:
                guest.write_text(f"{UNIT_DIR}/{unit}", render())
        guest.symlink(f"{ETC_UNIT_DIR}/basic.target.wants/kata-containers.target",
                      f"{UNIT_DIR}/kata-containers.target")
        guest.symlink(f"{ETC_UNIT_DIR}/kata-containers.target.wants/dbus.socket", f"{UNIT_DIR}/dbus.socket")
        if not unit_exists(guest, "tmp.mount"):
            guest.write_text(f"{ETC_UNIT_DIR}/tmp.mount", templates.render("tmp.mount.j2"))
        if not unit_exists(guest, "default.target"):  # a tree dracut made from the host has none
            guest.symlink(f"{ETC_UNIT_DIR}/default.target", f"{UNIT_DIR}/multi-user.target")
        if inputs.trim_systemd:
            trim_tree(guest, self.trimmed_names())
        install_extension_mount(guest, templates)

    def validate(self, guest: GuestRoot, target: Arch, expected: InstalledAgent) -> None:
        systemd = installed_systemd(guest)
        if systemd is None:
            raise BuildError("init mode is systemd but systemd is not installed",
                             "the recipe must install systemd in systemd mode (its [packages.init] systemd list)")
        if not os.path.samefile(guest.resolve(INIT_PATH), guest.resolve(systemd)):
            raise BuildError(f"init mode is systemd but {INIT_PATH} is not systemd", "rebuild with --init agent")
        agent_file = guest.resolve(self.agent_path)
        if not agent_file.is_file():
            raise BuildError(f"the agent is missing at {self.agent_path}", "rebuild the tree")
        _check_installed(guest, agent_file, target, expected, self.agent_path)
        if not pulls_in(guest, "basic.target", "kata-agent.service"):
            raise BuildError("kata-agent.service is not reachable from basic.target", "rebuild the tree")
        if not unit_exists(guest, "dbus.socket"):
            raise BuildError("systemd mode needs D-Bus for the agent's systemd cgroup driver, but dbus.socket "
                             "is missing", "add dbus to the recipe's packages")
        check_extension_mount(guest)


class ExtensionInit(InitMode):
    """Kata's extension images (docs/kata-contract.md, composable guests): files a systemd base mounts read-only
    at /run/kata-extensions/<name> before its agent starts. Nothing in them runs as init, and
    they hold no agent, so no cgroup driver follows from them."""

    name = "none"
    help = "an extension image (--extension NAME): no agent and no init; a systemd base mounts it"
    agent_is_init = False
    runs_systemd = False
    holds_agent = False
    agent_path = AGENT_PATH  # where an agent must not be
    initrd_init_target = INIT_PATH
    recognition_rank = 95  # what is left: a tree with neither init nor agent
    CGROUP_DRIVER = "none"

    @property
    def cgroup_driver(self) -> str:
        return self.CGROUP_DRIVER

    def guest_cgroup_driver(self, host_driver: str | None) -> str:
        return self.CGROUP_DRIVER

    def probe_mismatch(self, probe: dict[str, object]) -> str | None:
        return None

    def observed_in(self, view: GuestView) -> str | None:
        if view.lstat(INIT_PATH) is None and view.lstat(AGENT_PATH) is None:
            return f"there is neither {INIT_PATH} nor an agent ({AGENT_PATH}): an extension image"
        return None

    def install(self, guest: GuestRoot, agent: AgentBinary, templates: Templates, inputs: InitInputs) -> None:
        raise BuildError("an extension image installs no agent", "build it with --init none and no agent")

    def validate(self, guest: GuestRoot, target: Arch, expected: InstalledAgent) -> None:
        for path, what in ((INIT_PATH, "an init"), (AGENT_PATH, "an agent")):
            if guest.lexists(path):
                raise UserError(f"an extension image holds no init and no agent, but the tree has {path} "
                                f"({what})", f"remove {path} from the tree or overlay, or build a base instead "
                                "of --init none")


def trim_tree(guest: GuestRoot, names: frozenset[str]) -> tuple[str, ...]:
    """Remove every file and link named in `names` anywhere in the tree (`.wants/` links and
    the /lib paths of trees that do not merge /usr included), never following a link; returns
    the guest paths removed."""
    removed = []
    for directory, dirs, files in os.walk(guest.root):
        for name in sorted(set(files + [d for d in dirs if os.path.islink(os.path.join(directory, d))]) & names):
            removed.append(guest.guest_path_of(Path(directory, name)))
    for path in removed:
        guest.remove(path)
    return tuple(sorted(removed))


INIT_MODES: dict[str, InitMode] = {mode.name: mode for mode in (AgentInit(), SystemdInit(), LauncherInit(),
                                                                  ExtensionInit())}


def get_init_mode(name: str) -> InitMode:
    return lookup(INIT_MODES, name, "init mode")


def recognise_init_mode(view: GuestView) -> tuple[InitMode | None, str]:
    """The mode a tree's /sbin/init shows, and why; (None, why) when no mode recognises it."""
    for mode in sorted(INIT_MODES.values(), key=lambda m: m.recognition_rank):
        why = mode.observed_in(view)
        if why is not None:
            return mode, why
    if view.stat(INIT_PATH) is None:
        return None, f"{INIT_PATH} is missing"
    return None, f"{INIT_PATH} is neither an ELF executable nor systemd, nor what any init mode installs"


def modes_starting_agent_as_init(agent_is_init: bool) -> list[InitMode]:
    """The modes that agree with Kata's `agent-is-init-daemon` record, the most likely first."""
    return sorted((m for m in INIT_MODES.values() if m.holds_agent and m.agent_is_init == agent_is_init),
                  key=lambda m: m.recognition_rank)



@dataclass(frozen=True)
class InitSetting:
    init: str | None = setting(None, help="how the agent starts (agent: it is PID 1; systemd: a systemd service; "
                               "launcher: started by --launcher; none: an extension image, no agent and no init); packing a tree, by default the mode its "
                               "osbuilder.yaml records", choices=lambda: INIT_MODES)
