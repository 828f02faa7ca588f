"""The settings and the printed report of `inspect` and `check`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from osbuilder.host.findings import SEVERITIES, Finding
from osbuilder.inspect import Report
from osbuilder.updates import UpdatesOptions, describe_updates
from osbuilder.foundation.settings import as_path, setting
from osbuilder.foundation.shared_settings import ArtifactSetting, HostCgroupDriverSetting

MiB = 1 << 20


@dataclass(frozen=True)
class InspectOptions(ArtifactSetting, UpdatesOptions):
    required_settings: ClassVar[tuple[str, ...]] = ("artifact",)
    runtime_config_fragment: Path | None = setting(None, help="also write the kata-runtime.toml fragment that "
                                                   "matches the artifact to FILE", metavar="FILE", parse=as_path)


@dataclass(frozen=True)
class CheckOptions(ArtifactSetting, HostCgroupDriverSetting, UpdatesOptions):
    """Without an ARTIFACT, check takes every artifact the runtime config names."""

    runtime_config: Path | None = setting(None, help="Kata's configuration.toml (or a drop-in)", metavar="FILE",
                                          parse=as_path)
    containerd_config: Path | None = setting(None, help="containerd's config.toml (1.x or 2.x layout)",
                                             metavar="FILE", parse=as_path)
    crio_config: Path | None = setting(None, help="CRI-O's crio.conf", metavar="FILE", parse=as_path)
    kubelet_config: Path | None = setting(None, help="the kubelet's config.yaml", metavar="FILE", parse=as_path)
    kernel_config: Path | None = setting(None, help="the guest kernel's .config (initrd compression, architecture)",
                                         metavar="FILE", parse=as_path)
    fail_on: str = setting("error", help="the least severe finding that fails the check with exit 1 (default: "
                           "error; warning or info for a stricter gate)", choices=lambda: SEVERITIES)


def _fact(report: Report, name: str, text: str | None = None) -> str:
    fact = report.facts[name]
    shown = text if text is not None else str(fact.value)
    return f"{shown} (inferred: {fact.source})" if fact.inferred else shown


def _size(value: int | None) -> str:
    return "unknown" if value is None else f"{value / MiB:.1f} MiB"


def describe(report: Report) -> str:
    a = report.artifact
    lines = [f"{report.shown}: {a.kind}" + (f", {a.size} bytes" if a.size else "")]

    def row(label: str, value: str) -> None:
        lines.append(f"  {label + ':':<15}{value}")

    row("arch", _fact(report, "arch"))
    distro = report.facts["distro"].value
    row("distro", f"{distro['name']} {distro['release']}" if distro else "not recorded")
    row("init mode", _fact(report, "init_mode"))
    row("cgroup driver", _fact(report, "cgroup_driver"))
    agent = report.agent
    extension = report.extension
    if extension is not None:
        verified = {True: "verified against its hash partition", False: "DOES NOT MATCH its hash partition",
                    None: "not measured" if not extension["measured"] else "no root-hash file beside it"}
        row("extension", f"{extension['name'] or 'unnamed'}, {_size(extension['size'])}, "
                         f"{extension['files']} files ({_size(extension['bytes'])}) in "
                         f"{', '.join(extension['top_level'] or []) or 'nothing'}")
        row("root hash", f"{extension['root_hash'] or 'none'} ({verified[extension['root_hash_verified']]})")
    elif agent.get("present"):
        verified = {True: "verified", False: "DOES NOT MATCH the recorded digest", None: "no digest recorded"}
        row("agent", f"{agent.get('name') or 'agent'} {agent.get('version') or ''} at {agent['path']}, sha256 "
                     f"{agent['sha256'][:16]}... ({verified[agent['verified']]})"
                     + (", osbuilder's PROBE agent" if agent.get("probe") else ""))
    else:
        row("agent", f"missing at {agent['path']}")
    row("packages", str(len(report.packages)) if report.packages is not None else "not recorded")
    if report.updates is not None:
        row("updates", describe_updates(report.updates))
        for pending in report.updates.pending:
            lines.append(f"    {pending.name} {pending.installed} -> {pending.available} ({pending.source.name}, "
                         f"{pending.source.kind})")
    builder = report.facts["builder"].value
    row("built by", f"{builder['name']} {builder['version']}, {builder['created']}" if builder else "unknown")
    layout = report.layout
    if "compression" in layout:
        row("compression", f"{layout['compression']} (needs {layout['kernel_config'] or 'nothing'})")
    if "partition_table" in layout:
        parts = ", ".join(f"#{p['number']} at {p['offset'] // MiB} MiB, {_size(p['size'])}"
                          for p in layout["partition_table"])
        row("partitions", f"MBR: {parts}")
        dax = layout["dax"]
        row("DAX header", "none" if not dax["present"] else
            f"{'valid' if dax['valid'] else 'INVALID'} (checksum {'ok' if dax['checksum_ok'] else 'wrong'})")
        verity = layout["verity"]
        row("dm-verity", "no" if not verity["hash_partition"] else
            f"hash partition; root hash {verity['root_hash_sidecar'] or 'file MISSING'}")
    if "filesystem" in layout:
        fs = layout["filesystem"]
        used = f", {_size(fs['used'])} used" if fs.get("used") is not None else ""
        row("filesystem", f"{fs['type']}, {_size(fs['size'])}{used}")
    lines += findings_lines(report.findings, indent="  ")
    return "\n".join(lines)


def findings_lines(findings: list[Finding], indent: str = "") -> list[str]:
    if not findings:
        return [f"{indent}findings: none"]
    return [f"{indent}{f.line()}" for f in findings]


def as_json(reports: list[Report]) -> Any:
    return [r.as_json() for r in reports] if len(reports) != 1 else reports[0].as_json()
