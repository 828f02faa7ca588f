"""The summary file inside every guest: /var/lib/osbuilder/osbuilder.yaml.

It records how the guest was built, above all the init mode and the cgroup driver that
mode implies, so an image can be checked against a host before it is deployed.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from osbuilder import __version__
from osbuilder.foundation.epoch import format_time
from osbuilder.foundation.documents import check_shape
from osbuilder.foundation.yaml_documents import load_yaml_document
from osbuilder.foundation.errors import UserError
from osbuilder.foundation.fsutil import GuestRoot
from osbuilder.foundation.guest_layout import SUMMARY_PATH
from osbuilder.rootfs.initmode import get_init_mode
from osbuilder.rootfs.backends.base import Package, PackageSource

if TYPE_CHECKING:  # jinja2 is imported by what renders, not by what checks
    from osbuilder.foundation.templates import Templates

OSBUILDER_URL = "osbuilder"
NO_AGENT = "none"  # what an extension image records for its agent


@dataclass(frozen=True)
class ExtensionRecord:
    """What an extension image holds, recorded in its osbuilder.yaml and shown by inspect."""

    name: str
    files: int  # regular files, its osbuilder.yaml included
    bytes: int  # their sizes
    top_level: tuple[str, ...]  # the directories at its root
    allow_setuid: bool = False  # built with --allow-setuid: packing it later allows them too

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "files": self.files, "bytes": self.bytes, "top_level": list(self.top_level),
                "allow_setuid": self.allow_setuid}


def recorded_extension(summary: dict[str, Any] | None) -> dict[str, Any]:
    """The summary's extension table (empty for a base, or when malformed)."""
    extension = (summary or {}).get("extension")
    return extension if isinstance(extension, dict) else {}


def describe_extension(guest: GuestRoot, name: str, allow_setuid: bool) -> ExtensionRecord:
    """Count what the tree holds; the summary about to be written counts as one file."""
    files = total = 0
    for directory, _, names in os.walk(guest.root):
        for entry in names:
            path = os.path.join(directory, entry)
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode) and guest.guest_path_of(Path(path)) != SUMMARY_PATH:
                files += 1
                total += info.st_size
    top = tuple(sorted(entry.name for entry in guest.root.iterdir() if entry.is_dir() and not entry.is_symlink()))
    return ExtensionRecord(name, files + 1, total, top, allow_setuid)


def own_by_root(guest: GuestRoot) -> None:
    """Every file root's (recorded by fakeroot in a rootless build); chown clears setuid and
    setgid bits, so they are set again (validation refuses them unless allowed)."""
    for directory, dirs, names in os.walk(guest.root):
        for entry in [directory] + [os.path.join(directory, n) for n in dirs + names]:
            info = os.lstat(entry)
            if (info.st_uid, info.st_gid) != (0, 0):
                if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                    # A hard link may be shared with the build cache's copy: own a copy instead.
                    copy = f"{entry}.osbuilder-own"
                    shutil.copy2(entry, copy, follow_symlinks=False)
                    os.replace(copy, entry)
                os.chown(entry, 0, 0, follow_symlinks=False)
                if not stat.S_ISLNK(info.st_mode) and info.st_mode & 0o6000:
                    os.chmod(entry, stat.S_IMODE(info.st_mode))


@dataclass(frozen=True)
class Summary:
    architecture: str
    distro: str
    release: str
    default_packages: tuple[str, ...]
    extra_packages: tuple[str, ...]
    init_mode: str
    agent_url: str
    agent_version: str
    agent_sha256: str
    creation_epoch: int | None
    probe: bool = False  # the agent is osbuilder's probe agent
    installed: tuple[Package, ...] = ()  # every package, from the package database
    launcher_sha256: str | None = None  # the launcher mode's /sbin/init
    payloads: tuple[Any, ...] = ()  # rootfs.payloads.PayloadRecord: what was unpacked or copied over the tree
    slim: Any = None  # rootfs.slim.SlimRecord when --slim removed files
    agent_tarball_files: tuple[str, ...] = ()  # what --agent-tarball brought into the guest
    confidential: bool = False
    trust: Any = None  # rootfs.trust.TrustRecord with --ca-certificates or --ca-bundle
    extension: ExtensionRecord | None = None  # an extension image (init mode none)
    sources: tuple[PackageSource, ...] = ()  # the suites or repositories installed from
    mirror: str = ""  # the mirror they were installed from (--mirror, else the recipe's)

    @property
    def cgroup_driver(self) -> str:
        return get_init_mode(self.init_mode).cgroup_driver

    def render(self, templates: Templates) -> str:
        # The creation time is a fact about the tree: the epoch when one is set, else now.
        when = self.creation_epoch if self.creation_epoch is not None else int(time.time())
        return templates.render(
            "osbuilder.yaml.j2",
            osbuilder_url=OSBUILDER_URL,
            osbuilder_version=__version__,
            creation_time=format_time(when),
            description=(f"osbuilder {self.distro} {self.release} extension image '{self.extension.name}'"
                         if self.extension else f"osbuilder {self.distro} {self.release} guest ({self.init_mode} init)"),
            architecture=self.architecture,
            distro=self.distro,
            release=self.release,
            default_packages=sorted(set(self.default_packages)),
            extra_packages=sorted(set(self.extra_packages)),
            sources=self.sources,
            mirror=self.mirror,
            agent_url=self.agent_url,
            agent_version=self.agent_version,
            init=get_init_mode(self.init_mode).summary_fields(),
            agent_sha256=self.agent_sha256,
            agent_name="osbuilder-probe" if self.probe else NO_AGENT if self.extension else "kata-agent",
            probe=self.probe,
            installed=self.installed,
            launcher_sha256=self.launcher_sha256,
            payloads=self.payloads,
            slim=self.slim,
            agent_tarball_files=self.agent_tarball_files,
            confidential=self.confidential,
            trust=self.trust,
            extension=self.extension,
        )


SUMMARY_LIMIT = 16 << 20  # a summary of 5,000 packages is ~500 KB
_TEXT = str
_PACKAGE_SHAPE = {"name": _TEXT, "version": _TEXT, "architecture": _TEXT, "files-removed": _TEXT}
# What each key osbuilder reads must be; a summary from elsewhere may hold more.
SUMMARY_SHAPE = {
    "osbuilder": {"url": _TEXT, "version": _TEXT},
    "rootfs-creation-time": _TEXT, "description": _TEXT, "file-format-version": _TEXT, "architecture": _TEXT,
    "base-distro": {"name": _TEXT, "version": (_TEXT, int, float),
                    "mirror": _TEXT, "sources": [{"name": _TEXT, "url": _TEXT, "kind": _TEXT}],
                    "packages": {"default": [_TEXT], "extra": [_TEXT], "installed": [_PACKAGE_SHAPE]}},
    "agent": {"url": _TEXT, "name": _TEXT, "probe": _TEXT, "version": (_TEXT, int, float), "init-mode": _TEXT,
              "agent-is-init-daemon": _TEXT, "cgroup-driver": _TEXT, "sha256": _TEXT, "launcher-sha256": _TEXT,
              "tarball-files": [_TEXT]},
    "confidential": _TEXT,
    "extension": {"name": _TEXT, "files": int, "bytes": int, "allow-setuid": _TEXT, "top-level": [_TEXT]},
    "ca-certificates": {"packages": [_TEXT], "bundle": _TEXT, "sha256": _TEXT,
                        "user-cas": [{"source": _TEXT, "sha256": _TEXT, "anchor": _TEXT}]},
    "payloads": [{"name": _TEXT, "source": _TEXT, "sha256": _TEXT}],
    "slim": {"files": int, "bytes": int, "rules": [{"rule": _TEXT, "files": int, "bytes": int}]},
}


def parse_summary(text: str, source: str = "osbuilder.yaml") -> dict[str, Any]:
    """Read an osbuilder.yaml (a user may have edited it) with a real YAML parser, as JSON
    types only, within the YAML limits, and each value osbuilder reads of the type it reads.

    Malformed YAML, or YAML that is not a mapping, is the user's to fix: a UserError naming
    `source` and the line, never a traceback."""
    fix = f"fix or remove {SUMMARY_PATH}"
    data = load_yaml_document(text, source, fix)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{source}: not a YAML mapping", fix)
    check_shape(data, SUMMARY_SHAPE, source, fix)
    return data


def recorded_agent(summary: dict[str, Any] | None) -> dict[str, Any]:
    """The summary's agent table (empty when absent or malformed)."""
    agent = (summary or {}).get("agent")
    return agent if isinstance(agent, dict) else {}


def installed_packages(summary: dict[str, Any] | None) -> list[dict[str, str]] | None:
    """The package list a summary records, or None when it records none (upstream's)."""
    packages = ((summary or {}).get("base-distro") or {}).get("packages") or {}
    installed = packages.get("installed") if isinstance(packages, dict) else None
    if not isinstance(installed, list):
        return None
    return [p for p in installed if isinstance(p, dict) and "name" in p]


def recorded_mirror(summary: dict[str, Any] | None) -> str:
    """The mirror a summary records its packages were installed from, or ''."""
    mirror = ((summary or {}).get("base-distro") or {}).get("mirror")
    return mirror if isinstance(mirror, str) else ""


def recorded_sources(summary: dict[str, Any] | None) -> tuple[PackageSource, ...]:
    """The suites or repositories a summary records its packages were installed from."""
    recorded = ((summary or {}).get("base-distro") or {}).get("sources")
    found = [PackageSource.from_json(s) for s in recorded] if isinstance(recorded, list) else []
    return tuple(s for s in found if s is not None)
