"""The fixed interface every package-manager backend implements.

A backend installs packages into a directory (`install`) and owns its recipe table
(`[<name>]`, parsed into its `Section` dataclass), so keys that only make sense for one
package manager never enter the common recipe schema.
"""

from __future__ import annotations

import dataclasses
import hashlib
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

from osbuilder.foundation.arch import Arch
from osbuilder.foundation.errors import UserError
from osbuilder.foundation.fsutil import GuestRoot, remove_tree
from osbuilder.rootfs.tarball import extract_tarball
from osbuilder.foundation.privilege import Privilege
from osbuilder.foundation.runner import FILESYSTEM, PROBE, Runner


# What a source offers: the release as published, its stable updates, its security fixes.
RELEASE, UPDATES, SECURITY = "release", "updates", "security"
SOURCE_KINDS = (RELEASE, UPDATES, SECURITY)


@dataclass(frozen=True)
class PackageSource:
    """One suite (apt) or repository (dnf, apk) an install draws from, recorded in the
    summary, manifest.json, packages.lock and the SBOM."""

    name: str  # the suite (bookworm-security) or the repository's URL
    url: str  # the archive it is served from
    kind: str = RELEASE

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "url": self.url, "kind": self.kind}

    @classmethod
    def from_json(cls, data: Any) -> "PackageSource | None":
        """A recorded source, or None when `data` is not one (a summary from elsewhere)."""
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) and data.get(k) for k in ("name", "url")):
            return None
        kind = data.get("kind", RELEASE)
        return cls(data["name"], data["url"], kind if kind in SOURCE_KINDS else RELEASE)


@dataclass(frozen=True)
class IndexState:
    """What the sources' indexes say before an install: the epoch of a build given none, and a
    digest of each source's package index (by source name), so a cached tree is reused only
    while the indexes it was installed from are unchanged."""

    epoch: int | None
    digests: tuple[tuple[str, str], ...] = ()
    # Update or security sources that publish nothing for the build's arch (Debian's LTS
    # security archive drops architectures): left out of the install and the records.
    unserved: tuple[str, ...] = ()


@dataclass(frozen=True)
class Available:
    """The newest version of a package a source offers now (`inspect --updates`)."""

    name: str
    version: str
    architecture: str
    source: PackageSource


@dataclass(frozen=True)
class InstallRequest:
    """Everything that decides the installed tree's content."""

    distro: str
    release: str
    arch: Arch
    packages: tuple[str, ...]
    mirror: str
    section: Any  # the backend's Section, recipe values with command-line overrides applied
    source_date_epoch: int | None
    # With --lock, `packages` pins every package; these are the ones the locked build asked
    # for, which a package manager that records its world (apk) records.
    world: tuple[str, ...] = ()
    # The suites or repositories installed from (Backend.package_sources); empty: the mirror's
    # release alone.
    sources: tuple[PackageSource, ...] = ()

    @property
    def chosen_sources(self) -> tuple[PackageSource, ...]:
        return self.sources or (PackageSource(self.release, self.mirror, RELEASE),)

    def identity(self) -> dict[str, Any]:
        data = asdict(self)
        data["arch"] = self.arch.name
        data["packages"] = sorted(set(self.packages))
        return data


@dataclass(frozen=True)
class Package:
    """One package installed in the guest, as its package database records it."""

    name: str
    version: str
    architecture: str
    files_removed: bool = False  # --slim removed its files; the package list still names it


@dataclass(frozen=True)
class EmptySection:
    """For backends that need no recipe table."""


def recipe_path(default: str = "", help: str = "") -> Any:
    """A Section field naming a file: relative values are relative to the recipe's directory
    (so a recipe can ship its keys beside it), absolute paths and URLs are kept."""
    return dataclasses.field(default=default, metadata={"recipe_path": True, "help": help})


def recipe_relative(recipe: Path, value: str) -> str:
    if not value or value.startswith("/") or "://" in value:
        return value
    return str(recipe.resolve().parent / value)


def recipe_files(section: Any) -> list[str]:
    """The local files (keys, keyrings) a backend's recipe table names."""
    return [value for f in dataclasses.fields(section) if f.metadata.get("recipe_path")
            for value in [getattr(section, f.name)] if value and "://" not in value]


def content_digest(path: str) -> str:
    """sha256 over a file, or over a directory's files by relative name; '' if absent."""
    target = Path(path)
    digest = hashlib.sha256()
    files = [target] if target.is_file() else sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else []
    for file in files:
        digest.update(str(file.relative_to(target) if file != target else "").encode() + b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest() if files else ""


def check_keyring(keyring: str, flag_hint: str) -> None:
    """A local keyring must exist before any work; URLs are fetched by the package manager."""
    if keyring and "://" not in keyring and not Path(keyring).exists():
        raise UserError(f"keyring '{keyring}' does not exist", flag_hint)


class Backend(ABC):
    name: ClassVar[str]
    purl_type: ClassVar[str]  # the package-URL type of its packages (pkg:<type>/...)
    Section: ClassVar[type] = EmptySection
    # Cross-architecture installs run the guest's package scripts under qemu-user.
    needs_binfmt_for_foreign_arch: ClassVar[bool] = True

    def parse_section(self, recipe: Path, table: dict[str, Any]) -> Any:
        """The recipe's [<name>] table as this backend's Section; errors name file and key."""
        fields = {f.name: f for f in dataclasses.fields(self.Section)}
        values: dict[str, Any] = {}
        for key, value in table.items():
            field = fields.get(key)
            if field is None:
                raise UserError(f"recipe {recipe}: unknown key '{self.name}.{key}'",
                                f"remove it or use one of: {', '.join(fields) or 'none'}")
            default = field.default
            if field.metadata.get("recipe_path") and isinstance(value, str):
                value = recipe_relative(recipe, value)
            if isinstance(default, tuple):
                if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                    raise UserError(f"recipe {recipe}: key '{self.name}.{key}' must be a list of strings",
                                    f'write it as {key} = ["..."]')
                value = tuple(value)
            elif not isinstance(value, type(default)):
                raise UserError(f"recipe {recipe}: key '{self.name}.{key}' must be a {type(default).__name__}",
                                "fix its value")
            values[key] = value
        return self.Section(**values)

    def apply_overrides(self, section: Any, overrides: dict[str, Any]) -> Any:
        """Command-line values that replace the recipe's (e.g. --components for apt)."""
        given = {key: value for key, value in overrides.items() if value}
        fields = {f.name for f in dataclasses.fields(section)}
        for key in given:
            if key not in fields:
                flag = "--" + key.replace("_", "-")
                raise UserError(f"{flag} does not apply to the {self.name} package manager", f"drop {flag}")
        return dataclasses.replace(section, **given)

    def tool_version(self, runner: Runner) -> str:
        """The package manager's version, part of the bootstrap cache key. A backend
        implemented in osbuilder itself is versioned with osbuilder."""
        from osbuilder import __version__

        return f"osbuilder {__version__}"

    def preflight(self, request: InstallRequest, privilege: Privilege) -> None:
        """Refuse, before any work, what this package manager cannot do for the request
        (a keyring that is not there, an arch it cannot install)."""

    # What the package manager prints when a pinned version is gone (named groups name, version).
    missing_pin_patterns: ClassVar[tuple[str, ...]] = ()

    def pin(self, package: Package) -> str:
        """How the package manager is asked for exactly this version (--lock)."""
        return f"{package.name}={package.version}"

    def index_epoch(self, request: InstallRequest, workdir: Path, runner: Runner) -> int | None:
        """The newest time the repositories' indexes record (their date, or their newest
        package's), read before installing: the epoch of a build that is given none, so the
        same indexes give the same bytes. None: the indexes record no time."""
        return None

    def package_sources(self, release: str, mirror: str, section: Any, updates: bool) -> tuple[PackageSource, ...]:
        """The suites or repositories a build of `release` installs from: with `updates`, the
        distribution's update and security sources beside the release's (on an archive of
        their own where the distribution has one: the section's, after --security-mirror)."""
        return (PackageSource(release, mirror, RELEASE),)

    def read_indexes(self, request: InstallRequest, workdir: Path, runner: Runner) -> IndexState:
        """The sources' indexes, read before installing: the epoch (index_epoch) and a digest of
        each source's package list, which the bootstrap cache key includes."""
        return IndexState(self.index_epoch(request, workdir, runner))

    def available_versions(self, request: InstallRequest, workdir: Path, runner: Runner) -> list[Available]:
        """Every package the request's sources offer now, as their indexes list them (the
        packages themselves are not fetched)."""
        raise UserError(f"the {self.name} package manager cannot list what its repositories offer",
                        "drop --updates")

    def compare_versions(self, left: str, right: str) -> int:
        """<0, 0 or >0 as version `left` sorts before, with or after `right`."""
        raise NotImplementedError

    @abstractmethod
    def install(self, request: InstallRequest, root: Path, workdir: Path, runner: Runner,
                downloads: Path | None = None) -> None:
        """Install request.packages into the empty directory `root`, with true owners.
        `downloads`, when given, keeps the downloaded packages for later builds: reuse what is
        there, add what was fetched (whole files only: other builds read it concurrently)."""

    @abstractmethod
    def package_files(self, guest: GuestRoot, runner: Runner, section: Any, names: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
        """The guest paths each of the installed packages `names` owns, from the package
        database (read before provisioning removes it)."""

    @abstractmethod
    def installed_packages(self, guest: GuestRoot, runner: Runner, section: Any) -> tuple[Package, ...]:
        """Every package the guest's own package database records as installed, sorted.
        Read after install and before provisioning, which removes the database."""


def install_through_user_namespace(install: Callable[[Path], None], installroot: Path, root: Path, tarball: Path,
                                   env: dict[str, str], runner: Runner) -> None:
    """An unprivileged build's install: `install(installroot)` runs the package manager as
    root of a user namespace with the user's subordinate ids (in_user_namespace, `env` with
    the real ids), and the tree it wrote reaches `root` as a tarball, unpacked under fakeroot.

    The install root is made, archived and deleted inside the namespace, never seen by
    fakeroot: had fakeroot recorded a file there (its mkdir does), the deletion outside it
    would leave the record behind, and a file that later reused the inode number would take
    on the deleted one's type and owner."""
    runner.run(runner.privilege.in_user_namespace(["mkdir", str(installroot)]), env=env, limit=PROBE)
    try:
        install(installroot)
        runner.run(runner.privilege.in_user_namespace(["tar", "--create", "--file", str(tarball), "--directory", str(installroot),
                                      "--numeric-owner", "--xattrs", "--xattrs-include=*", "."]), env=env, limit=FILESYSTEM)
    finally:
        # Only root of the same mapping may delete what the subordinate ids own.
        runner.run(runner.privilege.in_user_namespace(["rm", "-rf", "--one-file-system", str(installroot)]), env=env, check=False, limit=FILESYSTEM)
    try:
        extract_tarball(tarball, root, runner)
    finally:
        remove_tree(tarball)


def read_index_file(url: str, into: Path, runner: Runner) -> bytes:
    """One small index file of a repository, over HTTP(S) or from a file:// or local mirror.
    Only its time is read here; the package manager verifies what it installs."""
    from osbuilder.foundation.fetch import fetch, is_url

    if is_url(url):
        into.unlink(missing_ok=True)
        return fetch(url, None, into, progress=runner.progress, signed=True).read_bytes()
    path = Path(url.removeprefix("file://"))
    if not path.is_file():
        raise UserError(f"the repository index {url} does not exist", "check --mirror and --release")
    return path.read_bytes()
