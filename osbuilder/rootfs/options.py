"""The rootfs stage's settings, each declared once (see settings.py)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osbuilder.arch import ARCHES, Arch, canonical_arch_name, get_arch
from osbuilder.initmode import INIT_MODES
from osbuilder.settings import as_path, setting, to_json


def arch_names() -> tuple[str, ...]:
    return tuple(ARCHES)


# How the tree is made: the recipe's packages through its package manager, or the build
# host's own system through dracut.
DISTRO, DRACUT = "distro", "dracut"
METHODS = (DISTRO, DRACUT)


@dataclass(frozen=True)
class RecipeSource:
    """Where recipes come from: `distros` takes this alone, the rootfs stage with the rest."""

    recipes_dir: Path | None = setting(None, help="read distribution recipes from this directory",
                                       metavar="DIR", parse=as_path)


@dataclass(frozen=True)
class RootfsOptions(RecipeSource):
    distro: str = setting(help="distribution recipe to build from (see `osbuilder distros`)", required=True)
    init: str = setting(help="how the agent starts: as PID 1 (agent) or as a systemd service (systemd)",
                        choices=lambda: INIT_MODES, required=True)
    agent: str | None = setting(None, help="agent executable to install (an ELF for --arch): a file, or an "
                                "http(s) URL downloaded and checked against --agent-sha256", metavar="PATH|URL")
    agent_tarball: str | None = setting(None, help="Kata's agent release tarball (kata-static-agent.tar.zst): "
                                        "usr/bin/kata-agent and, optionally, its systemd units; a file or URL",
                                        metavar="PATH|URL")
    agent_source: Path | None = setting(None, help="build the agent from its source tree (Kata's src/agent) with "
                                        "make, and install it from make install", metavar="DIR", parse=as_path)
    agent_sha256: str | None = setting(None, help="the sha256 the agent (or agent tarball) must have; a download "
                                       "without it is not pinned and warns", metavar="HEX")
    probe_agent: bool = setting(False, help="install osbuilder's probe agent instead of an agent: a smoke test "
                                "that reports the init mode and cgroup driver at boot, then powers off "
                                "(for `osbuilder boot`, never for production)", boolean=True)
    existing: Path | None = setting(None, help="provision a copy of this tree, bootstrapped by you, instead of "
                                    "bootstrapping one (the recipe still names what it is)", metavar="DIR",
                                    parse=as_path)
    method: str = setting(DISTRO, help="how the tree is made: the recipe's packages (distro), or this host's own "
                          "system reduced by dracut (dracut; --distro names the host's distribution)",
                          choices=lambda: METHODS)
    release: str = setting("", help="distribution release (default: the recipe's)")
    arch: str = setting("", help="target architecture (default: the host's)", choices=arch_names,
                        parse=canonical_arch_name)
    launcher: Path | None = setting(None, help="the launcher installed as /sbin/init in init mode launcher (it "
                                    "starts the agent, e.g. NVIDIA's NVRC)", metavar="FILE", parse=as_path)
    strip: bool = setting(True, help="strip the agent's symbols before installing it (the summary records the "
                          "installed bytes' sha256)", boolean=True)
    agent_version: str = setting("unknown", help="agent version recorded in osbuilder.yaml", metavar="V")
    extra_packages: tuple[str, ...] = setting((), help="more packages to install, comma separated",
                                              metavar="A,B", many=True)
    mirror: str = setting("", help="package mirror URL (default: the recipe's)", metavar="URL")
    components: tuple[str, ...] = setting((), help="apt archive components, comma separated (default: the "
                                          "recipe's [apt] components)", metavar="A,B", many=True)
    keyring: Path | None = setting(None, help="trust this archive keyring instead of the recipe's: a gpg keyring "
                                   "for apt and dnf, an .rsa.pub key or a directory of them for apk",
                                   metavar="FILE", parse=as_path)
    slim: bool = setting(False, help="after provisioning, remove what the recipe's [slim] rules name (the package "
                         "manager and its database, unneeded interpreters, gconv modules, locales, caches); the "
                         "package list is recorded first", boolean=True)
    trim_systemd: bool = setting(False, help="remove systemd units a sandbox never needs", boolean=True)
    kernel_modules: Path | None = setting(None, help="directory copied to /lib/modules/<its name> in the guest",
                                          metavar="DIR", parse=as_path)
    seccomp: bool = setting(True, help="install the seccomp library the agent needs for seccomp filters",
                            boolean=True)
    guest_hooks: Path | None = setting(None, help="OCI hooks tarball unpacked into /usr/share/oci/hooks",
                                       metavar="TARBALL", parse=as_path)
    pause_image: Path | None = setting(None, help="the pause image's OCI bundle tarball, unpacked into /pause_bundle",
                                       metavar="TARBALL", parse=as_path)
    coco_components: Path | None = setting(None, help="confidential-guest components tarball, unpacked over /",
                                           metavar="TARBALL", parse=as_path)
    agent_policy: str | None = setting(None, help="agent policy: a .rego file installed under /etc/kata-opa with "
                                       "the default-policy.rego link, or 'default' (allow all)",
                                       metavar="FILE|default")
    overlay: Path | None = setting(None, help="a directory copied over the tree last (its files win)",
                                   metavar="DIR", parse=as_path)
    overlay_owner: str = setting("tree", help="owners of the overlay's files: as in the overlay (tree) or root",
                                 choices=lambda: ("tree", "root"))
    cache_dir: Path | None = setting(None, help="keep bootstrapped trees and downloaded packages here, reused by "
                                     "later builds (default: $XDG_CACHE_HOME/osbuilder)", metavar="DIR",
                                     parse=as_path)
    no_cache: bool = setting(False, help="bootstrap from scratch and keep nothing", boolean=True)
    # Not a flag: the reproducible-builds convention is the environment variable.
    source_date_epoch: int | None = None

    @property
    def installs_packages(self) -> bool:
        """Whether the tree is installed from the recipe's package set (not copied or made by dracut)."""
        return self.existing is None and self.method == DISTRO

    def backend_overrides(self) -> dict[str, Any]:
        """Command-line values for the package manager's recipe table, by its field names."""
        return {"components": self.components, "keyring": str(self.keyring) if self.keyring else ""}

    @property
    def target(self) -> Arch:
        return get_arch(self.arch)

    def identity(self) -> dict[str, Any]:
        """Everything that decides the guest's content (not where it is written or cached)."""
        data = to_json(self)
        for incidental in ("cache_dir", "no_cache", "recipes_dir"):
            data.pop(incidental)
        data["agent"] = Path(self.agent).name if self.agent is not None else None
        data["source_date_epoch"] = self.source_date_epoch
        return data

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()
