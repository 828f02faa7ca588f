"""packages.lock: every package a build installed, with its exact version and architecture,
where it came from (mirror, release) and the recipe's digest; `--lock FILE` installs exactly
those again. With the mirror pointed at a dated snapshot of the archive, last month's guest
is rebuilt byte for byte (README, "Pinned in time")."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osbuilder.foundation.documents import require_file
from osbuilder.foundation.errors import UserError
from osbuilder.foundation.fsutil import sha256_file
from osbuilder.rootfs.backends.base import Package, PackageSource

log = logging.getLogger("osbuilder")

LOCK_NAME = "packages.lock"
LOCK_VERSION = 1
LOCK_FIX = "write it with osbuilder build (packages.lock beside manifest.json)"


@dataclass(frozen=True)
class PackageLock:
    distro: str
    release: str
    arch: str
    backend: str
    mirror: str
    recipe_sha256: str
    source_date_epoch: int | None
    packages: tuple[Package, ...]
    requested: tuple[str, ...] = ()  # what the build asked for; the rest came as dependencies
    sources: tuple[PackageSource, ...] = ()  # the suites or repositories installed from

    def as_json(self) -> dict[str, Any]:
        return {"lock_version": LOCK_VERSION, "distro": self.distro, "release": self.release, "arch": self.arch,
                "backend": self.backend, "mirror": self.mirror, "recipe_sha256": self.recipe_sha256,
                "source_date_epoch": self.source_date_epoch, "requested": list(self.requested),
                "sources": [source.as_json() for source in self.sources],
                "packages": [{"name": p.name, "version": p.version, "architecture": p.architecture}
                             for p in self.packages]}

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> "PackageLock":
        require_file(path, "--lock", "pass the packages.lock of an earlier build")
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise UserError(f"--lock '{path}' does not exist", f"pass the packages.lock of an earlier build") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"--lock '{path}' cannot be read ({exc})", LOCK_FIX) from None
        if not isinstance(data, dict) or data.get("lock_version") != LOCK_VERSION:
            raise UserError(f"--lock '{path}' is not a version {LOCK_VERSION} packages.lock", LOCK_FIX)
        text = {key: data.get(key) for key in ("distro", "release", "arch", "backend", "mirror", "recipe_sha256")}
        bad = next((key for key, value in text.items() if not isinstance(value, str) or not value), None)
        epoch = data.get("source_date_epoch")
        packages = data.get("packages")
        if bad is None and not (epoch is None or isinstance(epoch, int) and not isinstance(epoch, bool)):
            bad = "source_date_epoch"
        if bad is None and (not isinstance(packages, list) or not packages or not all(
                isinstance(p, dict) and all(isinstance(p.get(k), str) and p.get(k) for k in ("name", "version"))
                and isinstance(p.get("architecture", ""), str) for p in packages)):
            bad = "packages"
        requested = data.get("requested", [])
        if bad is None and not (isinstance(requested, list) and all(isinstance(r, str) for r in requested)):
            bad = "requested"
        recorded = data.get("sources", [])
        sources = [PackageSource.from_json(s) for s in recorded] if isinstance(recorded, list) else [None]
        if bad is None and None in sources:
            bad = "sources"
        if bad is not None:
            raise UserError(f"--lock '{path}': '{bad}' is missing or not what a packages.lock holds", LOCK_FIX)
        return cls(**text, source_date_epoch=epoch,  # type: ignore[arg-type]
                   packages=tuple(Package(p["name"], p["version"], p.get("architecture", "")) for p in packages),
                   requested=tuple(requested), sources=tuple(s for s in sources if s is not None))


def lock_of(distro: str, release: str, arch: str, backend: str, mirror: str, recipe_path: Path,
            epoch: int | None, installed: tuple[Package, ...], requested: tuple[str, ...],
            sources: tuple[PackageSource, ...] = ()) -> PackageLock:
    return PackageLock(distro, release, arch, backend, mirror, sha256_file(recipe_path), epoch,
                       tuple(sorted(installed, key=lambda p: (p.name, p.architecture))), requested, sources)


def check_recipe(lock: PackageLock, recipe_path: Path, path: Path) -> None:
    if sha256_file(recipe_path) != lock.recipe_sha256:
        log.warning("warning: --lock %s: the recipe %s changed since the lock was written; the lock's packages "
                    "are installed as it names them", path, recipe_path.name)


def verify_installed(lock: tuple[Package, ...], installed: tuple[Package, ...], path: Path | None) -> None:
    """What the package manager installed against the lock: the same packages, the same
    versions. The first difference is bad input: the mirror no longer serves the lock."""
    have = {(p.name, p.architecture): p.version for p in installed}
    for package in lock:
        got = have.pop((package.name, package.architecture), None)
        if got != package.version:
            found = f"it installed {got}" if got else "it installed none"
            raise UserError(f"--lock {path}: the mirror no longer has {package.name} {package.version} ({found})",
                            SNAPSHOT_FIX)
    if have:
        (name, _), version = next(iter(sorted(have.items())))
        raise UserError(f"--lock {path}: the package manager added {name} {version}, which the lock does not name",
                        SNAPSHOT_FIX)


SNAPSHOT_FIX = ("point --mirror at a dated snapshot of the archive from the lock's time (README: pinned in time), "
                "or build without --lock to take the mirror's current versions")


def missing_pin(text: str, patterns: tuple[str, ...]) -> str | None:
    """The pinned package a package manager's output says it could not find, or None."""
    for pattern in patterns:
        match = re.search(pattern, text)
        if match is not None:
            found = match.groupdict()
            return " ".join(v for v in (found.get("name"), found.get("version")) if v)
    return None
