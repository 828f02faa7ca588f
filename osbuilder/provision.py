"""Stage 2: turn a bootstrapped tree into a sandbox guest for one init mode.

Every file written here is rendered from templates/; every write goes through GuestRoot,
so nothing follows a guest symlink out onto the build host.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from osbuilder.agent import AgentBinary
from osbuilder.config import BuildConfig
from osbuilder.fsutil import GuestRoot
from osbuilder.recipes import Recipe
from osbuilder.summary import SUMMARY_PATH, Summary
from osbuilder.systemd_units import unit_exists
from osbuilder.templates import Templates

log = logging.getLogger("osbuilder")

AGENT_PATH = "/usr/bin/kata-agent"
INIT_PATH = "/sbin/init"
UNIT_DIR = "/usr/lib/systemd/system"
ETC_UNIT_DIR = "/etc/systemd/system"
GENERATOR_DIR = "/usr/lib/systemd/system-generators"

# PID 1 needs stdio before it can mount devtmpfs.
AGENT_MODE_DEVICES = (("console", 5, 1), ("tty", 5, 0), ("ttyS0", 4, 64), ("null", 1, 3), ("zero", 1, 5))
AGENT_MODE_DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                        ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))

# Units a sandbox guest never needs (reference section 3), by base name.
TRIMMABLE_UNITS = (
    "systemd-coredump@", "systemd-journald", "systemd-journald-dev-log", "systemd-journal-flush",
    "systemd-random-seed", "systemd-timesyncd", "systemd-tmpfiles-setup", "systemd-udevd",
    "systemd-udevd-control", "systemd-udevd-kernel", "systemd-udev-trigger", "systemd-update-utmp",
)
TRIMMABLE_FILES = (
    f"{GENERATOR_DIR}/systemd-bless-boot-generator", f"{GENERATOR_DIR}/systemd-fstab-generator",
    f"{GENERATOR_DIR}/systemd-getty-generator", f"{GENERATOR_DIR}/systemd-gpt-auto-generator",
    f"{UNIT_DIR}/systemd-tmpfiles-cleanup.timer",
)
VOLATILE_VAR_DIRS = ("/var/cache", "/var/lib", "/var/log", "/var/tmp")


@dataclass(frozen=True)
class Provisioner:
    guest: GuestRoot
    config: BuildConfig
    recipe: Recipe
    agent: AgentBinary
    templates: Templates

    def run(self) -> Summary:
        self.remove_unneeded()
        self.write_resolv_conf()
        self.configure_chrony()
        if self.config.init == "agent":
            self.install_agent_as_init()
        else:
            self.install_agent_as_service()
            if self.config.trim_systemd:
                self.trim_systemd()
        if self.config.kernel_modules is not None:
            self.guest.copy_tree(self.config.kernel_modules, f"/lib/modules/{self.config.kernel_modules.name}")
        return self.write_summary()

    # -- both modes ---------------------------------------------------------------------
    def remove_unneeded(self) -> None:
        for path in self.recipe.remove_paths + VOLATILE_VAR_DIRS:
            self.guest.remove(path)
        self.guest.symlink("/var/tmp", "../tmp")

    def write_resolv_conf(self) -> None:
        # The runtime bind-mounts the container's resolv.conf onto this empty file; a link
        # here (often absolute, e.g. to systemd-resolved) would point the mount elsewhere.
        self.guest.write_text("/etc/resolv.conf", self.templates.render("resolv.conf.j2"))

    def configure_chrony(self) -> None:
        conf = self.recipe.chrony_conf
        if not self.guest.exists(conf):
            log.info("chrony is not installed; skipping its configuration")
            return
        text = re.sub(r"^(\s*)(server|pool|peer)\b", r"\1# \2", self.guest.read_text(conf), flags=re.M)
        self.guest.replace_text(conf, text + self.templates.render("chrony.conf.append.j2"))
        service = f"{UNIT_DIR}/{self.recipe.chrony_service}"
        if self.guest.exists(service):
            exec_start, read_write = _chrony_service_changes(self.guest.read_text(service))
            self.guest.write_text(
                f"{ETC_UNIT_DIR}/{self.recipe.chrony_service}.d/osbuilder.conf",
                self.templates.render("chrony.service.override.conf.j2",
                                      exec_start=exec_start, read_write_paths=read_write))

    def write_summary(self) -> Summary:
        summary = Summary(
            architecture=self.config.arch,
            distro=self.recipe.name,
            release=self.config.release,
            default_packages=self.recipe.packages_for(self.config.arch, self.config.init, self.config.seccomp),
            extra_packages=self.config.extra_packages,
            init_mode=self.config.init,
            agent_url="osbuilder:probe" if self.agent.probe else f"file:{self.agent.path.name}",
            agent_version=self.config.agent_version,
            agent_sha256=self.agent.sha256,
            creation_epoch=self.config.source_date_epoch,
            probe=self.agent.probe,
        )
        self.guest.write_text(SUMMARY_PATH, summary.render(self.templates))
        return summary

    # -- agent mode -----------------------------------------------------------------------
    def install_agent_as_init(self) -> None:
        self.guest.copy_file(self.agent.path, INIT_PATH, 0o755)
        for name, major, minor in AGENT_MODE_DEVICES:
            self.guest.mknod_char(f"/dev/{name}", major, minor, 0o666 if name in ("null", "zero", "tty") else 0o600)
        for name, target in AGENT_MODE_DEV_LINKS:
            self.guest.symlink(f"/dev/{name}", target)

    # -- systemd mode ---------------------------------------------------------------------
    def install_agent_as_service(self) -> None:
        self.guest.copy_file(self.agent.path, AGENT_PATH, 0o755)
        self.guest.write_text(f"{UNIT_DIR}/kata-agent.service",
                              self.templates.render("kata-agent.service.j2", agent_path=AGENT_PATH))
        self.guest.write_text(f"{UNIT_DIR}/kata-containers.target",
                              self.templates.render("kata-containers.target.j2"))
        self.guest.symlink(f"{ETC_UNIT_DIR}/basic.target.wants/kata-containers.target",
                           f"{UNIT_DIR}/kata-containers.target")
        self.guest.symlink(f"{ETC_UNIT_DIR}/kata-containers.target.wants/dbus.socket", f"{UNIT_DIR}/dbus.socket")
        if not unit_exists(self.guest, "tmp.mount"):
            self.guest.write_text(f"{ETC_UNIT_DIR}/tmp.mount", self.templates.render("tmp.mount.j2"))

    def trim_systemd(self) -> None:
        for base in TRIMMABLE_UNITS:
            for suffix in (".service", ".socket"):
                for directory in (UNIT_DIR, ETC_UNIT_DIR):
                    self.guest.remove(f"{directory}/{base}{suffix}")
        for path in TRIMMABLE_FILES:
            self.guest.remove(path)


def _chrony_service_changes(unit_text: str) -> tuple[str, list[str]]:
    """ExecStart without `-u <user>`, and ReadWritePaths with /var/lib/chrony optional."""
    exec_start = ""
    read_write: list[str] = []
    for line in unit_text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key.strip() == "ExecStart":
            exec_start = value.strip()
        elif key.strip() == "ReadWritePaths":
            # An empty assignment resets the list, as systemd does.
            read_write = read_write + value.split() if value.strip() else []
    exec_start = re.sub(r"\s-u\s+\S+", "", exec_start)
    read_write = ["-/var/lib/chrony" if p == "/var/lib/chrony" else p for p in read_write]
    if "-/var/lib/chrony" not in read_write:
        read_write.append("-/var/lib/chrony")
    return exec_start, read_write
