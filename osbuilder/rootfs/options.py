"""The rootfs stage's settings, each declared once (see settings.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from osbuilder.foundation.arch import Arch, get_arch
from osbuilder.rootfs.initmode import InitSetting
from osbuilder.foundation.settings import as_path, setting
from osbuilder.foundation.shared_settings import (ArchSetting, BaseSetting, CacheDirSetting, ExtensionSetting,
                                                 MirrorSettings, UpdatesSetting)


# How the tree is made: the recipe's packages through its package manager, or the build
# host's own system through dracut.
DISTRO, DRACUT = "distro", "dracut"
METHODS = (DISTRO, DRACUT)


def _epoch(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"'{text}' is not a whole number of seconds since 1970")
    return int(text)


@dataclass(frozen=True)
class RecipeSource:
    """Where recipes come from: `distros` takes this alone, the rootfs stage with the rest."""

    recipes_dir: Path | None = setting(None, help="read distribution recipes from this directory",
                                       metavar="DIR", parse=as_path)


@dataclass(frozen=True)
class RootfsOptions(RecipeSource, InitSetting, ArchSetting, CacheDirSetting, ExtensionSetting, BaseSetting,
                    MirrorSettings, UpdatesSetting):
    required_settings: ClassVar[tuple[str, ...]] = ("init",)
    distro: str = setting(help="distribution recipe to build from (see `osbuilder distros`)", required=True)
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
    launcher: Path | None = setting(None, help="the launcher installed as /sbin/init in init mode launcher (it "
                                    "starts the agent, e.g. NVIDIA's NVRC)", metavar="FILE", parse=as_path)
    strip: bool = setting(True, help="strip the agent's symbols before installing it (the summary records the "
                          "installed bytes' sha256)", boolean=True)
    agent_version: str = setting("unknown", help="agent version recorded in osbuilder.yaml", metavar="V")
    extra_packages: tuple[str, ...] = setting((), help="more packages to install, comma separated",
                                              metavar="A,B", many=True)
    components: tuple[str, ...] = setting((), help="apt archive components, comma separated (default: the "
                                          "recipe's [apt] components)", metavar="A,B", many=True)
    keyring: Path | None = setting(None, help="trust this archive keyring instead of the recipe's: a gpg keyring "
                                   "for apt and dnf, an .rsa.pub key or a directory of them for apk",
                                   metavar="FILE", parse=as_path)
    slim: bool = setting(False, help="after provisioning, remove what the recipe's [slim] rules name (the package "
                         "manager and its database, unneeded interpreters, gconv modules, locales, caches); the "
                         "package list is recorded first", boolean=True)
    trim_systemd: bool | None = setting(None, help="remove the systemd units and generators a sandbox never needs, "
                                        "anywhere in the tree, as Kata's rootfs.sh -d does (default: on with "
                                        "--layout kata, else off)", boolean=True)
    kernel_modules: Path | None = setting(None, help="directory copied to /lib/modules/<its name> in the guest",
                                          metavar="DIR", parse=as_path)
    seccomp: bool = setting(True, help="install the seccomp library the agent needs for seccomp filters",
                            boolean=True)
    guest_hooks: Path | None = setting(None, help="OCI hooks tarball, unpacked over / (it carries its own paths, "
                                       "e.g. ./usr/share/oci/hooks/prestart/...)",
                                       metavar="TARBALL", parse=as_path)
    pause_image: Path | None = setting(None, help="Kata's pause bundle tarball (kata-static-pause-image.tar.zst), "
                                       "unpacked over /: it must hold ./pause_bundle/config.json",
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
    confidential: bool = setting(False, help="a confidential guest, as Kata's CONFIDENTIAL_GUEST=yes (systemd mode "
                                 "only): /run becomes a tmpfs of half the memory (image pull needs room), "
                                 "kata-containers.target requires systemd-remount-fs.service, and "
                                 "--ca-certificates is implied", boolean=True)
    ca_certificates: bool = setting(False, help="install the distribution's CA bundle package (ca-certificates "
                                    "on Debian and Ubuntu; the recipe's [trust] packages), never the build "
                                    "host's files", boolean=True)
    ca_bundle: tuple[str, ...] = setting((), help="a PEM file of CA certificates to add to the guest's trust store "
                                         "(repeatable): placed among the distribution's local CAs and appended "
                                         "to its bundle", metavar="FILE", many=True, repeatable=True)
    libseccomp_lib_path: Path | None = setting(None, help="with --agent-source and seccomp: the directory holding "
                                               "a static libseccomp.a for the agent's target (Kata's "
                                               "LIBSECCOMP_LIB_PATH; default: that environment variable)",
                                               metavar="DIR", parse=as_path)
    allow_setuid: bool = setting(False, help="with --init none: allow setuid and setgid files in the extension "
                                 "(refused by default: what an extension adds to a guest runs with no raised privileges)",
                                 boolean=True)
    no_cache: bool = setting(False, help="bootstrap from scratch and keep nothing", boolean=True)
    lock: Path | None = setting(None, help="install exactly the packages, versions, mirror, release and epoch of "
                                "this packages.lock (an earlier build's); a version the mirror no longer has is "
                                "refused, naming it", metavar="FILE", parse=as_path)
    # Not a flag: what --lock names, read by config (the versions to install, then to verify).
    pinned: tuple[Any, ...] = ()
    pinned_world: tuple[str, ...] = ()  # what the locked build asked for (its package manager's world)
    # Not a flag: the sources' index digests, read before bootstrapping (Backend.read_indexes);
    # the bootstrap cache key includes them.
    index_digests: tuple[tuple[str, str], ...] = ()
    unserved_sources: tuple[str, ...] = ()  # sources that publish nothing for the arch (IndexState)
    source_date_epoch: int | None = setting(None, help="clamp every timestamp to this time, in seconds since 1970 "
                                            "(default: SOURCE_DATE_EPOCH, else derived from the inputs: the package "
                                            "index's date, or the newest time the given tree records; never the "
                                            "clock)", metavar="N", parse=_epoch)
    # Not flags: Kata's agent build takes INIT_DATA and USE_DEVMAPPER from the environment,
    # and osbuilder passes them through when they are set (name -> value).
    agent_build_environment: tuple[tuple[str, str], ...] = ()
    agent_libc: str | None = None  # the recipe's [agent] libc, for --agent-source

    @property
    def extension_name(self) -> str | None:
        """The extension image's name (--extension NAME; config checks there is one at most)."""
        return self.extension[0] if self.extension else None

    @property
    def starts_empty(self) -> bool:
        """An extension image with nothing to install and no tree of yours starts from an empty
        tree and holds its payloads and overlay alone (a CoCo extension of --coco-components):
        the recipe's bootstrap would only repeat the base."""
        return self.extension_name is not None and self.existing is None and self.method == DISTRO \
            and not self.extra_packages and not self.pinned

    @property
    def with_updates(self) -> bool:
        """Whether the release's update and security sources are installed from (by default)."""
        return self.updates is not False

    @property
    def installs_packages(self) -> bool:
        """Whether the tree is installed from the recipe's package set (not copied, made by
        dracut, or started empty)."""
        return self.existing is None and self.method == DISTRO and not self.starts_empty

    def backend_overrides(self) -> dict[str, Any]:
        """Command-line values for the package manager's recipe table, by its field names."""
        return {"components": self.components, "keyring": str(self.keyring) if self.keyring else "",
                "security_mirror": self.security_mirror}

    @property
    def target(self) -> Arch:
        assert self.arch, "the arch is resolved when the options are made"
        return get_arch(self.arch)
