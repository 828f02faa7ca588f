"""Turn a bootstrapped tree into a sandbox guest for one init mode.

Every file written here is rendered from templates/; every write goes through GuestRoot,
so nothing follows a guest symlink out onto the build host. What depends on the init mode
is the init mode object's to do.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from osbuilder.foundation.fetch import is_url
from osbuilder.foundation.fsutil import GuestRoot, sha256_file
from osbuilder.foundation.guest_layout import (AGENT_PATH, HOSTNAME, INIT_PATH, CHRONY_CONFS, CHRONY_UNITS, ETC_UNIT_DIR, MODULES_DIR, RESOLV_CONF,
                                    SUMMARY_PATH, UNIT_DIR, VAR_TMP, VAR_TMP_TARGET, VOLATILE_VAR_DIRS)
from osbuilder.rootfs.confidential import make_confidential
from osbuilder.rootfs.extract import safe_extract
from osbuilder.rootfs.initmode import InitInputs, get_init_mode
from osbuilder.rootfs.recipes import Recipe
from osbuilder.rootfs.agent import AgentBinary
from osbuilder.rootfs.backends import Package
from osbuilder.rootfs.bootstrap import install_request, remove_recipe_paths
from osbuilder.rootfs.options import RootfsOptions
from osbuilder.rootfs.payloads import PayloadRecord, install_payloads
from osbuilder.rootfs.closure import GUEST_PATH
from osbuilder.rootfs.slim import SlimRecord, Slimmer
from osbuilder.rootfs.summary import NO_AGENT, ExtensionRecord, Summary, describe_extension, own_by_root
from osbuilder.rootfs.trust import TrustRecord, install_trust
from osbuilder.rootfs.systemd_units import first_existing_unit
from osbuilder.foundation.runner import Runner
from osbuilder.foundation.templates import Templates

log = logging.getLogger("osbuilder")


@dataclass(frozen=True)
class Provisioner:
    guest: GuestRoot
    options: RootfsOptions
    recipe: Recipe
    agent: AgentBinary | None  # None: an extension image
    templates: Templates
    packages: tuple[Package, ...] = ()  # what the package database recorded before provisioning
    workdir: Path | None = None  # scratch space for payload tarballs
    runner: Runner = field(default_factory=Runner)
    slim_files: dict[str, tuple[str, ...]] | None = None  # --slim: the files of the packages that go

    def run(self) -> Summary:
        if self.agent is None:
            return self.run_extension()
        self.remove_unneeded()
        self.write_resolv_conf()
        self.guest.write_text(HOSTNAME, self.templates.render("hostname.j2"))
        self.configure_chrony()
        self.unpack_agent_tarball()
        inputs = InitInputs(trim_systemd=self.options.trim_systemd is True, launcher=self.options.launcher)
        get_init_mode(self.options.init).install(self.guest, self.agent, self.templates, inputs)
        if self.options.confidential:
            make_confidential(self.guest, self.templates)
        trust = self.install_trust()
        if self.options.kernel_modules is not None:
            self.guest.copy_tree(self.options.kernel_modules, f"{MODULES_DIR}/{self.options.kernel_modules.name}")
        slimmed = self.slim() if self.slim_files is not None else None
        # Payloads last (the overlay last of all): what the user brings wins over osbuilder's files.
        payloads = install_payloads(self.guest, self.options, self.templates,
                                    self.workdir or self.guest.root.parent, self.runner)
        return self.write_summary(payloads, slimmed, trust)

    def run_extension(self) -> Summary:
        """An extension image: the bootstrapped or given files, the payloads and overlay over
        them, and nothing a base provides (no agent, init, hostname or resolv.conf). Every
        file becomes root's: the base mounts it as part of its own system."""
        self.remove_unneeded()
        if self.options.kernel_modules is not None:
            self.guest.copy_tree(self.options.kernel_modules, f"{MODULES_DIR}/{self.options.kernel_modules.name}")
        slimmed = self.slim() if self.slim_files is not None else None
        payloads = install_payloads(self.guest, self.options, self.templates,
                                    self.workdir or self.guest.root.parent, self.runner)
        own_by_root(self.guest)
        return self.write_summary(payloads, slimmed, None, describe_extension(self.guest, str(self.options.extension_name),
                                                                         self.options.allow_setuid))

    def install_trust(self) -> TrustRecord | None:
        if not (self.options.ca_certificates or self.options.ca_bundle):
            return None
        assert self.recipe.trust is not None, "config refuses CA options for a recipe without [trust]"
        return install_trust(self.guest, self.recipe.trust, self.options.ca_certificates, self.options.ca_bundle)

    def unpack_agent_tarball(self) -> None:
        """Kata's rootfs builder unpacks the agent tarball whole; the agent binary itself is
        the init mode's to place (stripped), and in agent mode it moves to /sbin/init, as in
        Kata's builder, so no second copy is left at its tarball path."""
        if self.agent.tarball is None:
            return
        safe_extract(self.agent.tarball, self.guest, self.workdir or self.guest.root.parent, self.runner)
        self.guest.remove(AGENT_PATH)

    def slim(self) -> SlimRecord:
        mode = get_init_mode(self.options.init)
        tools = self.recipe.tools if mode.holds_agent else ()
        protected = (INIT_PATH, mode.agent_path, SUMMARY_PATH) + tuple(
            path for tool in tools for path in (f"{d}/{tool}" for d in GUEST_PATH))
        return Slimmer(self.guest, protected).run(self.slim_files or {}, self.recipe.slim_paths)

    def remove_unneeded(self) -> None:
        remove_recipe_paths(self.guest, self.recipe)  # already done for a cached bootstrap
        for path in VOLATILE_VAR_DIRS:
            self.guest.remove_matching(path)
        self.guest.symlink(VAR_TMP, VAR_TMP_TARGET)

    def write_resolv_conf(self) -> None:
        # The runtime bind-mounts the container's resolv.conf onto this empty file; a link
        # here (often absolute, e.g. to systemd-resolved) would point the mount elsewhere.
        self.guest.write_text(RESOLV_CONF, self.templates.render("resolv.conf.j2"))

    def configure_chrony(self) -> None:
        conf = next((path for path in CHRONY_CONFS if self.guest.exists(path)), None)
        if conf is None:
            log.info("chrony is not installed; skipping its configuration")
            return
        text = re.sub(r"^(\s*)(server|pool|peer)\b", r"\1# \2", self.guest.read_text(conf), flags=re.M)
        self.guest.replace_text(conf, text + self.templates.render("chrony.conf.append.j2"))
        unit = first_existing_unit(self.guest, CHRONY_UNITS)
        service = f"{UNIT_DIR}/{unit}"
        if unit is not None and self.guest.exists(service):
            exec_start, read_write = _chrony_service_changes(self.guest.read_text(service))
            self.guest.write_text(
                f"{ETC_UNIT_DIR}/{unit}.d/osbuilder.conf",
                self.templates.render("chrony.service.override.conf.j2",
                                      exec_start=exec_start, read_write_paths=read_write))

    def agent_url(self) -> str:
        """Where the agent came from: its URL, or the name of the file or tarball it was given as."""
        if self.agent is None:
            return NO_AGENT
        if self.options.agent_source is not None:
            return f"source:{Path(self.options.agent_source).name}"
        source = self.options.agent_tarball or self.options.agent
        return _agent_source_url(source, self.agent.probe, self.agent.path)

    def write_summary(self, payloads: tuple[PayloadRecord, ...] = (), slimmed: SlimRecord | None = None,
                      trust: TrustRecord | None = None, extension: ExtensionRecord | None = None) -> Summary:
        options = self.options
        gone = set(slimmed.packages) if slimmed is not None else set()
        installed = tuple(dataclasses.replace(p, files_removed=p.name in gone) for p in self.packages)
        summary = Summary(
            architecture=options.arch,
            distro=self.recipe.name,
            release=options.release,
            # A copied or dracut-made tree was not installed from the recipe's package set.
            default_packages=(self.recipe.packages_for(options.arch, options.init, options.seccomp,
                                                       options.ca_certificates)
                              if options.installs_packages else ()),
            extra_packages=options.extra_packages,
            sources=install_request(options, self.recipe).chosen_sources if options.installs_packages else (),
            mirror=options.mirror if options.installs_packages else "",
            init_mode=options.init,
            agent_url=self.agent_url(),
            agent_version=options.agent_version if self.agent is not None else NO_AGENT,
            agent_sha256=self.agent.sha256 if self.agent is not None else "",
            creation_epoch=options.source_date_epoch,
            probe=self.agent is not None and self.agent.probe,
            installed=installed,
            slim=slimmed,
            launcher_sha256=sha256_file(self.options.launcher) if self.options.launcher else None,
            payloads=payloads,
            agent_tarball_files=self.agent.tarball_files if self.agent is not None else (),
            confidential=options.confidential,
            trust=trust,
            extension=extension,
        )
        self.guest.write_text(SUMMARY_PATH, summary.render(self.templates))
        return summary


def _agent_source_url(source: str | None, probe: bool, fallback: Path) -> str:
    if probe:
        return "osbuilder:probe"
    if source and is_url(source):
        return source
    return f"file:{Path(source).name if source else fallback.name}"


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
