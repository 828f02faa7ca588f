"""The settings more than one command takes, each declared once here and mixed into every
options class that takes it, so its flag, help and choices cannot drift apart between
commands. Which of them a command requires, its class says (`required_settings`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from osbuilder.foundation.arch import arch_names, canonical_arch_name
from osbuilder.foundation.cgroups import HOST_CGROUP_DRIVERS
from osbuilder.foundation.settings import as_path, setting


@dataclass(frozen=True)
class ArtifactSetting:
    artifact: Path | None = setting(None, help="an initrd, disk image or ISO; inspect and check also take a rootfs "
                                    "directory or a Kata release directory or tarball", positional=True,
                                    metavar="ARTIFACT", parse=as_path)


@dataclass(frozen=True)
class ArchSetting:
    arch: str | None = setting(None, help="the guest's architecture (default: what the tree or artifact records or "
                               "is built for; for a new rootfs, the host's)", choices=arch_names,
                               parse=canonical_arch_name)


@dataclass(frozen=True)
class CacheDirSetting:
    cache_dir: Path | None = setting(None, help="osbuilder's cache of bootstrapped trees, packages, initrd pieces and "
                                     "kernels (default: $XDG_CACHE_HOME/osbuilder, else ~/.cache/osbuilder)",
                                     metavar="DIR", parse=as_path)


@dataclass(frozen=True)
class HostCgroupDriverSetting:
    host_cgroup_driver: str | None = setting(None, help="the host's cgroup driver: check takes it over the host's "
                                             "configuration files, boot hands it to the guest (kernel parameter "
                                             "osbuilder.host_cgroup_driver)", choices=lambda: HOST_CGROUP_DRIVERS)


@dataclass(frozen=True)
class OutputSetting:
    output: Path | None = setting(None, help="where to write: a directory for rootfs and build, a file for a "
                                  "packer (matrix: the -o of the commands it prints, default out)", flag="--output",
                                  short="-o", metavar="PATH", parse=as_path)


@dataclass(frozen=True)
class ExtensionSetting:
    """Extension images (docs/kata-contract.md, composable guests): the one a build makes, or those a boot attaches."""

    extension: tuple[str, ...] = setting((), help="an extension image: with build or rootfs --init none, its NAME "
                                         "(letters, digits, '_', '-'; at most 10: its disk serial is "
                                         "extension-NAME), named kata-containers-NAME-extension.img in the kata "
                                         "layout; with boot, NAME=IMAGE to attach, as Kata's runtime does, a "
                                         "virtio-blk disk with the serial extension-NAME and "
                                         "kata.extension.NAME.verity_params on the kernel command line "
                                         "(repeatable)", metavar="NAME|NAME=IMAGE", many=True, repeatable=True)


@dataclass(frozen=True)
class BaseSetting:
    base: Path | None = setting(None, help="for an extension image (--init none): the base image or tree it is "
                                "mounted into; its ELF files and scripts may find their libraries and interpreters "
                                "there (the closure check reads both)", metavar="IMAGE|DIR", parse=as_path)


@dataclass(frozen=True)
class MirrorSettings:
    """Where packages come from: a build installs from them, `inspect --updates` reads their
    current indexes."""

    mirror: str = setting("", help="package mirror URL (default: the recipe's; for inspect and check --updates, "
                          "the one the guest records)", metavar="URL")
    security_mirror: str = setting("", help="where the security suites are served (default: the recipe's [apt] "
                                   "security_mirror, Debian's http://deb.debian.org/debian-security; for inspect "
                                   "and check --updates, the one the guest records)", metavar="URL")


@dataclass(frozen=True)
class UpdatesSetting:
    """The release's update and security suites: a build installs from them, inspect and check
    compare a guest with them."""

    updates: bool | None = setting(None, help="build and rootfs: install from the release's update and security "
                                   "suites (or repositories) as the recipe names them, as well as the release's "
                                   "own (default: on; --no-updates: the release alone). inspect and check: compare "
                                   "the guest's packages with what the release and those suites offer now, reading "
                                   "the mirrors' indexes (default: off; finding security-updates-available)",
                                   boolean=True)
