"""The agent binary: where it comes from and whether it fits the target."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from osbuilder.foundation.arch import Arch, describe_elf
from osbuilder.foundation.elf import read_elf_header
from osbuilder.foundation.documents import require_file
from osbuilder.foundation.errors import UserError
from osbuilder.foundation.fsutil import GuestRoot, sha256_file
from osbuilder.foundation.guest_layout import AGENT_PATH, UNIT_DIR
from osbuilder.foundation.runner import BUILD

if TYPE_CHECKING:
    from osbuilder.foundation.runner import Runner


@dataclass(frozen=True)
class AgentBinary:
    path: Path
    sha256: str
    description: str  # what the file is, for people
    probe: bool = False  # osbuilder's probe agent (rootfs.probe), not a real agent
    # Systemd units that came with the agent (Kata's agent tarball): unit name -> file.
    units: dict[str, Path] = field(default_factory=dict)
    # Kata's agent tarball, unpacked whole over the guest (its extension-mount unit, scripts
    # and generator come along), and the guest paths of the files it holds.
    tarball: Path | None = None
    tarball_files: tuple[str, ...] = ()


def check_agent(path: Path, target: Arch) -> AgentBinary:
    """Refuse an agent that is missing, not an ELF executable, or built for another arch."""
    path = require_file(path, "agent file", "pass --agent the path of the agent executable")
    header = read_elf_header(path)
    if header is None or not header.executable:
        # libmagic is for naming what the file is instead; the decision is the header's
        # (imported here: only a refusal needs it, and every packer imports this module).
        import magic

        what = magic.from_file(str(path)).split(",")[0]
        raise UserError(f"agent '{path}' is not an ELF executable ({what})",
                        "pass the compiled agent binary, not a script or archive")
    if not target.matches_elf(header):
        found = describe_elf(header)
        raise UserError(f"agent is {found}, target is {target.name}",
                        f"pass an agent built for {target.rust_target} or use --arch {found}")
    return AgentBinary(path=path, sha256=sha256_file(path), description=f"ELF executable for {target.name}")


def check_pinned(path: Path, sha256: str | None) -> None:
    """A local agent (or tarball) given with --agent-sha256 must have that digest."""
    if sha256 is not None and sha256_file(path) != sha256.lower():
        raise UserError(f"'{path}' has sha256 {sha256_file(path)}, not the pinned {sha256.lower()}",
                        "check the file and the digest; nothing was installed")


def agent_from_tarball(tarball: Path, into: Path, target: Arch, workdir: Path, runner: "Runner") -> AgentBinary:
    """Kata's agent release tarball (docs/kata-contract.md, release packaging), unpacked safely into `into` to be
    checked: usr/bin/kata-agent, and the units it ships, which then replace osbuilder's. The
    provisioner unpacks the whole tarball over the guest."""
    from osbuilder.rootfs.extract import safe_extract  # tarfile and the codecs: for a tarball alone

    into.mkdir(parents=True, exist_ok=True)
    unpacked = safe_extract(tarball, GuestRoot(into), workdir, runner, owners=False)
    agent = agent_from_tree(into, target, f"agent tarball '{tarball}'", tarball.name)
    return dataclasses.replace(agent, tarball=tarball, tarball_files=tuple(sorted(unpacked.files)))


def agent_from_tree(root: Path, target: Arch, what: str, origin: str) -> AgentBinary:
    """The agent and its units in an installed tree (an unpacked tarball, a make install)."""
    guest = GuestRoot(root)
    binary = guest.resolve(AGENT_PATH)
    if not binary.is_file():
        raise UserError(f"{what} holds no {AGENT_PATH.lstrip('/')}", "pass Kata's agent, built and installed")
    agent = check_agent(binary, target)
    units = {name: guest.resolve(f"{UNIT_DIR}/{name}") for name in AGENT_UNITS
             if guest.resolve(f"{UNIT_DIR}/{name}").is_file()}
    return AgentBinary(path=agent.path, sha256=agent.sha256, description=f"{agent.description}, from {origin}",
                       units=units)


@dataclass(frozen=True)
class AgentBuild:
    """What Kata's release passes its agent Makefile (docs/kata-contract.md, release packaging)."""

    target: Arch
    agent_is_init: bool
    seccomp: bool
    policy: bool
    libc: str | None = None  # the recipe's [agent] libc; None: the arch's Rust target's
    libseccomp_lib_path: Path | None = None  # a static libseccomp for SECCOMP=yes
    environment: tuple[tuple[str, str], ...] = ()  # INIT_DATA, USE_DEVMAPPER when set

    def make_variables(self) -> list[str]:
        """LIBC: gnu on ppc64le and s390x (their Rust targets) and where the distribution's
        release build uses it (cbl-mariner), musl otherwise; static libseccomp with SECCOMP."""
        yes = {True: "yes", False: "no"}
        variables = [f"ARCH={self.target.name}", f"LIBC={self.libc or self.target.rust_target.rsplit('-', 1)[1]}",
                     f"INIT={yes[self.agent_is_init]}", f"SECCOMP={yes[self.seccomp]}",
                     f"AGENT_POLICY={yes[self.policy]}"]
        if self.seccomp and self.libseccomp_lib_path is not None:
            variables += ["LIBSECCOMP_LINK_TYPE=static", f"LIBSECCOMP_LIB_PATH={self.libseccomp_lib_path}"]
        return variables + [f"{name}={value}" for name, value in self.environment]


def agent_from_source(source: Path, build: AgentBuild, into: Path, runner: "Runner") -> AgentBinary:
    """Build the agent from its source tree with its own Makefile, install it into scratch
    space (never straight over the rootfs), and take the agent and its units from there."""
    target = build.target
    if not (source / "Makefile").is_file():
        raise UserError(f"agent source '{source}' has no Makefile", "pass Kata's src/agent directory")
    variables = build.make_variables()
    runner.run(["make", *variables], cwd=source, limit=BUILD,
               hint=f"the agent's build failed in {source}")
    into.mkdir(parents=True, exist_ok=True)
    runner.run(["make", "install", f"DESTDIR={into}", *variables], cwd=source, limit=BUILD,
               hint=f"the agent's install step failed in {source}")
    return agent_from_tree(into, target, f"the agent built from '{source}'", f"source {source.name}")




# The units an agent tarball may bring (they replace osbuilder's templates in systemd mode).
AGENT_UNITS = ("kata-agent.service", "kata-containers.target")
