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
