"""`inspect --updates` and `check --updates`: how current a guest is.

The guest's package list (its osbuilder.yaml) is compared with what its distribution's
sources offer now: the release and, whatever the guest was built with, the release's update
and security suites (or repositories) as its recipe names them, at the mirrors the guest
records unless --mirror or --security-mirror say otherwise. Only the indexes are read, never a
package. A newer version in a security suite is the finding security-updates-available
(warning); in any other source, updates-available (info)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osbuilder.foundation.arch import get_arch
from osbuilder.foundation.errors import UserError
from osbuilder.foundation.shared_settings import MirrorSettings, UpdatesSetting
from osbuilder.host.findings import Finding
from osbuilder.rootfs.backends.base import RELEASE, SECURITY, Available, InstallRequest, PackageSource
from osbuilder.rootfs.options import RecipeSource
from osbuilder.rootfs.summary import recorded_mirror, recorded_sources
from osbuilder.foundation.runner import Runner

SHOWN = 5  # packages named in a finding's message; the report lists them all
# Architectures whose packages install on every arch.
ANY_ARCH = ("all", "noarch")


@dataclass(frozen=True)
class UpdatesOptions(RecipeSource, MirrorSettings, UpdatesSetting):
    """inspect's and check's --updates (off unless given) and where to read the indexes."""


@dataclass(frozen=True)
class PendingUpdate:
    name: str
    installed: str
    available: str
    architecture: str
    source: PackageSource

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "installed": self.installed, "available": self.available,
                "architecture": self.architecture, "suite": self.source.name, "kind": self.source.kind,
                "url": self.source.url}


@dataclass
class UpdatesReport:
    sources: tuple[PackageSource, ...] = ()  # what was compared with
    built_from: tuple[PackageSource, ...] = ()  # what the guest records it was installed from
    pending: list[PendingUpdate] = field(default_factory=list)
    unknown: str | None = None  # why nothing could be compared

    @property
    def security(self) -> list[PendingUpdate]:
        return [p for p in self.pending if p.source.kind == SECURITY]

    def as_json(self) -> dict[str, Any]:
        return {"checked": self.unknown is None, "unknown": self.unknown,
                "sources": [s.as_json() for s in self.sources], "pending": [p.as_json() for p in self.pending],
                "security": len(self.security)}


def _request(report: Any, options: UpdatesOptions) -> InstallRequest | str:
    """What the guest's sources are now, or why they cannot be known."""
    from osbuilder.rootfs.recipes import load_recipe

    distro = report.facts["distro"].value
    if not distro or not distro.get("name") or not distro.get("release"):
        return "the artifact records no distribution and release (no osbuilder.yaml)"
    if report.packages is None:
        return "the artifact records no package list"
    if not report.arch:
        return "the artifact's architecture is not known"
    try:
        recipe = load_recipe(str(distro["name"]), options.recipes_dir)
    except UserError:
        return f"osbuilder has no recipe for {distro['name']} (pass --recipes-dir the one it was built from)"
    release, arch = str(distro["release"]), get_arch(report.arch)
    recorded = recorded_sources(report.summary)
    mirror = options.mirror or recorded_mirror(report.summary) or recipe.mirror_for(arch.name)
    security = options.security_mirror or next((s.url for s in recorded if s.kind == SECURITY), "")
    # Refused, naming the flag, where the package manager has no security archive of its own.
    section = recipe.backend.apply_overrides(recipe.backend_section, {"security_mirror": security})
    sources = recipe.backend.package_sources(release, mirror, section, updates=True)
    return InstallRequest(recipe.name, release, arch, (), mirror, section, None, sources=sources)


def pending_updates(report: Any, options: UpdatesOptions, workdir: Path, runner: Runner) -> UpdatesReport:
    """The packages of the guest `report` describes that its sources offer a newer version of."""
    from osbuilder.rootfs.recipes import load_recipe

    request = _request(report, options)
    if isinstance(request, str):
        return UpdatesReport(unknown=request)
    backend = load_recipe(request.distro, options.recipes_dir).backend
    workdir.mkdir(parents=True, exist_ok=True)
    newest: dict[tuple[str, str], Available] = {}
    for offered in backend.available_versions(request, workdir, runner):
        key = (offered.name, offered.architecture)
        held = newest.get(key)
        if held is None or backend.compare_versions(offered.version, held.version) > 0:
            newest[key] = offered
    result = UpdatesReport(sources=request.chosen_sources, built_from=recorded_sources(report.summary))
    for package in report.packages or []:
        name, version, arch = package.get("name", ""), package.get("version", ""), package.get("architecture", "")
        best = None
        for key in ((name, arch), *((name, a) for a in ANY_ARCH)):
            offered = newest.get(key)
            if offered is not None and (best is None or backend.compare_versions(offered.version, best.version) > 0):
                best = offered
        if best is not None and version and backend.compare_versions(best.version, version) > 0:
            result.pending.append(PendingUpdate(name, version, best.version, arch, best.source))
    return result


def _listed(pending: list[PendingUpdate]) -> str:
    shown = ", ".join(f"{p.name} {p.installed} -> {p.available} ({p.source.name})" for p in pending[:SHOWN])
    return shown + (f" and {len(pending) - SHOWN} more" if len(pending) > SHOWN else "")


def update_findings(updates: UpdatesReport, subject: str) -> list[Finding]:
    if updates.unknown is not None:
        return [Finding("info", "updates-unknown", f"how current the guest is cannot be told: {updates.unknown}",
                        "build it with osbuilder, which records its packages and sources", subject)]
    with_updates = any(s.kind != RELEASE for s in updates.built_from)
    fix = ("rebuild it (a rebuild sees the suites moved and installs afresh)" if with_updates else
           "rebuild it without --no-updates (osbuilder build installs the update and security suites by default)")
    findings = []
    security = updates.security
    others = [p for p in updates.pending if p.source.kind != SECURITY]
    if security:
        findings.append(Finding("warning", "security-updates-available",
                                f"{len(security)} package(s) have a newer version in a security suite: "
                                f"{_listed(security)}", fix, subject))
    if others:
        findings.append(Finding("info", "updates-available",
                                f"{len(others)} package(s) have a newer version in the release or its updates: "
                                f"{_listed(others)}", fix, subject))
    return findings


def describe_updates(updates: UpdatesReport) -> str:
    if updates.unknown is not None:
        return f"not known: {updates.unknown}"
    if not updates.pending:
        return f"none pending (checked {', '.join(s.name for s in updates.sources)})"
    return f"{len(updates.pending)} pending, {len(updates.security)} from security suites"


def add_updates(reports: list[Any], options: UpdatesOptions, workdir: Path, runner: Runner) -> None:
    """With --updates, each report's pending updates and their findings."""
    if options.updates is not True:
        return
    for index, report in enumerate(reports):
        report.updates = pending_updates(report, options, workdir / f"updates-{index}", runner)
        report.findings += update_findings(report.updates, report.shown)
