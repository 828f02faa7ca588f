"""`osbuilder inspect`: how an artifact was built and what it holds, read without mounting
or root, with what can be verified verified (the agent's bytes, the DAX header's checksum,
the declared init mode against the tree). Artifacts osbuilder did not build are described
as far as their bytes allow, and every inferred fact says so."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osbuilder.arch import arch_of_elf, get_arch
from osbuilder.elf import parse_elf_header
from osbuilder.errors import UserError
from osbuilder.findings import Finding
from osbuilder.guest_layout import AGENT_PATH, ETC_UNIT_DIR, INIT_PATH, SHELL, SYSTEMD_BINARIES, UNIT_SEARCH_PATH
from osbuilder.initmode import INIT_MODES, LAUNCHER
from osbuilder.pack.artifact import ArtifactInfo
from osbuilder.pack.disk import PFN_OFFSET, PFN_SIZE, fletcher64
from osbuilder.pack.fs import get_filesystem
from osbuilder.pack.image import ROOT_HASH_NAME
from osbuilder.read.kind import recognise_artifact
from osbuilder.read.summary import open_view, summary_of
from osbuilder.read.view import GuestView
from osbuilder.rootfs.probe import PROBE_MARKER
from osbuilder.rootfs.summary import installed_packages, recorded_agent
from osbuilder.runner import Runner


@dataclass
class Fact:
    value: Any
    source: str  # where it came from: "osbuilder.yaml", "agent-is-init-daemon", "/sbin/init", ...
    inferred: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"value": self.value, "source": self.source, "inferred": self.inferred}


@dataclass
class Report:
    artifact: ArtifactInfo
    summary: dict[str, Any] | None
    facts: dict[str, Fact] = field(default_factory=dict)
    agent: dict[str, Any] = field(default_factory=dict)
    packages: list[dict[str, str]] | None = None
    layout: dict[str, Any] = field(default_factory=dict)
    tree: dict[str, Any] = field(default_factory=dict)  # what check compares: units, D-Bus, init
    findings: list[Finding] = field(default_factory=list)

    @property
    def init_mode(self) -> str:
        return self.facts["init_mode"].value

    @property
    def arch(self) -> str | None:
        return self.facts["arch"].value

    def as_json(self) -> dict[str, Any]:
        return {
            "artifact": {"path": str(self.artifact.path), "kind": self.artifact.kind, "size": self.artifact.size},
            **{name: fact.as_json() for name, fact in self.facts.items()},
            "agent": self.agent,
            "packages": {"count": len(self.packages), "list": self.packages} if self.packages is not None else None,
            "layout": self.layout,
            "findings": [f.as_json() for f in self.findings],
        }


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_probe(data: bytes | None) -> bool:
    return data is not None and data.startswith(f"#!{SHELL}".encode()) and PROBE_MARKER.encode() in data


def _observed_init(view: GuestView) -> tuple[str, str]:
    """What the tree's /sbin/init is: (init mode, why)."""
    if view.stat(INIT_PATH) is None:
        return "unknown", f"{INIT_PATH} is missing"
    target = view.resolve(INIT_PATH)
    if any(view.stat(path) is not None and view.resolve(path) == target for path in SYSTEMD_BINARIES):
        return "systemd", f"{INIT_PATH} is systemd"
    data = view.read_file(INIT_PATH) or b""
    if _is_probe(data):
        return "agent", f"{INIT_PATH} is osbuilder's probe agent"
    agent = view.read_file(AGENT_PATH)
    if agent is not None and _sha256(agent) != _sha256(data):
        return LAUNCHER, f"{INIT_PATH} is neither the agent ({AGENT_PATH}) nor systemd"
    if parse_elf_header(data[:20]) is not None:
        return "agent", f"{INIT_PATH} is an ELF executable and the guest has no other agent"
    return "unknown", f"{INIT_PATH} is neither an ELF executable nor systemd"


def _wanted_by(view: GuestView, target: str, unit: str) -> bool:
    """`unit` is pulled in by `target` through a .wants/.requires link or its unit file."""
    for directory in UNIT_SEARCH_PATH:
        for suffix in (".wants", ".requires"):
            if unit in view.listdir(f"{directory}/{target}{suffix}"):
                return True
    for directory in UNIT_SEARCH_PATH:
        text = view.read_file(f"{directory}/{target}")
        if text is not None:
            for line in text.decode(errors="replace").splitlines():
                key, sep, value = line.partition("=")
                if sep and key.strip() in ("Wants", "Requires") and unit in value.split():
                    return True
            break
    return False


def _layout(artifact: ArtifactInfo, view: GuestView) -> dict[str, Any]:
    layout: dict[str, Any] = {"format": artifact.kind}
    if artifact.codec is not None:
        layout["compression"] = artifact.codec.name
        layout["kernel_config"] = artifact.codec.kernel_config
    if artifact.kind != "image":
        if artifact.fs:
            layout["filesystem"] = {"type": artifact.fs, "size": artifact.size}
        return layout
    layout["partition_table"] = [{"number": i + 1, "offset": start, "size": length}
                                 for i, (start, length) in enumerate(artifact.partitions)]
    with open(artifact.path, "rb") as f:
        f.seek(PFN_OFFSET)
        block = f.read(PFN_SIZE)
    dax: dict[str, Any] = {"present": artifact.dax}
    if artifact.dax:
        recorded = struct.unpack_from("<Q", block, PFN_SIZE - 8)[0]
        dax["checksum_ok"] = fletcher64(block[:-8] + bytes(8)) == recorded
        dax["mode"] = struct.unpack_from("<I", block, 72)[0]
        dax["align"] = struct.unpack_from("<I", block, 84)[0]
        dax["valid"] = dax["checksum_ok"] and dax["mode"] == 1
    layout["dax"] = dax
    sidecar = artifact.path.with_name(ROOT_HASH_NAME)
    layout["verity"] = {"hash_partition": artifact.verity,
                        "root_hash_sidecar": str(sidecar) if artifact.verity and sidecar.is_file() else None}
    length = artifact.partitions[0][1]
    # A content-sized filesystem (erofs) is exactly as large as what it holds.
    used = length if get_filesystem(artifact.fs or "").content_sized else view.used_bytes()
    layout["filesystem"] = {"type": artifact.fs, "size": length, "used": used}
    return layout


def inspect_artifact(path: Path, workdir: Path, runner: Runner) -> Report:
    artifact = recognise_artifact(path)
    with open_view(artifact, workdir, runner) as view:
        return _inspect_view(artifact, view)


def _inspect_view(artifact: ArtifactInfo, view: GuestView) -> Report:
    summary = summary_of(view, str(artifact.path))
    report = Report(artifact, summary, layout=_layout(artifact, view))
    facts = report.facts
    recorded = recorded_agent(summary)
    ours = (summary or {}).get("osbuilder", {}) if isinstance((summary or {}).get("osbuilder"), dict) else {}

    observed, why = _observed_init(view)
    declared = recorded.get("init-mode")
    if declared in INIT_MODES:
        facts["init_mode"] = Fact(declared, "osbuilder.yaml")
        if observed != declared:
            report.findings.append(Finding(
                "error", f"init-not-{declared}", f"osbuilder.yaml declares init mode '{declared}' but {why}: "
                "the guest fails at boot", f"rebuild the image with --init {declared}"))
    elif recorded.get("agent-is-init-daemon") in ("yes", "no"):
        says_agent = recorded["agent-is-init-daemon"] == "yes"
        value = "agent" if says_agent else (observed if observed in ("systemd", LAUNCHER) else "systemd")
        facts["init_mode"] = Fact(value, f"agent-is-init-daemon: {recorded['agent-is-init-daemon']}, {why}", True)
        if (observed == "agent") != says_agent and observed != "unknown":
            report.findings.append(Finding(
                "error", "init-not-agent" if says_agent else "init-not-systemd",
                f"osbuilder.yaml says agent-is-init-daemon: {recorded['agent-is-init-daemon']} but {why}: "
                "the guest fails at boot", "rebuild the image so that /sbin/init matches how the agent starts"))
    else:
        facts["init_mode"] = Fact(observed, why, True)
    mode = report.init_mode
    facts["cgroup_driver"] = Fact(INIT_MODES[mode].cgroup_driver if mode in INIT_MODES else "unknown",
                                  "the agent's rule for this init mode (reference section 2)",
                                  facts["init_mode"].inferred)

    agent_path = INIT_PATH if mode == "agent" else AGENT_PATH
    agent_bytes = view.read_file(agent_path)
    header = parse_elf_header(agent_bytes[:20]) if agent_bytes else None
    recorded_arch = (summary or {}).get("architecture")
    if isinstance(recorded_arch, str) and recorded_arch:
        facts["arch"] = Fact(get_arch(recorded_arch).name, "osbuilder.yaml")
    else:
        elf_arch = arch_of_elf(header)
        if elf_arch is None:
            init_bytes = view.read_file(INIT_PATH)
            elf_arch = arch_of_elf(parse_elf_header(init_bytes[:20]) if init_bytes else None)
        facts["arch"] = Fact(elf_arch.name if elf_arch else None, "the ELF header of the agent or /sbin/init", True)

    base = (summary or {}).get("base-distro") if isinstance((summary or {}).get("base-distro"), dict) else {}
    facts["distro"] = Fact({"name": base.get("name"), "release": base.get("version")} if base else None,
                           "osbuilder.yaml" if base else "not recorded", not base)
    facts["builder"] = Fact({"name": ours.get("url"), "version": ours.get("version"),
                             "created": (summary or {}).get("rootfs-creation-time")} if summary else None,
                            "osbuilder.yaml" if summary else "no osbuilder.yaml", summary is None)

    probe = recorded.get("probe") == "yes" or _is_probe(agent_bytes)
    report.agent = {
        "path": agent_path, "present": agent_bytes is not None, "name": recorded.get("name"),
        "version": recorded.get("version"), "sha256": _sha256(agent_bytes) if agent_bytes is not None else None,
        "sha256_recorded": recorded.get("sha256"), "probe": probe, "verified": None,
    }
    if agent_bytes is not None and recorded.get("sha256"):
        report.agent["verified"] = report.agent["sha256"] == recorded["sha256"]
        # In agent mode the agent is /sbin/init: a different binary there is "init is not the agent".
        code = "init-not-agent" if mode == "agent" else "agent-digest-mismatch"
        if not report.agent["verified"] and code not in {f.code for f in report.findings}:
            report.findings.append(Finding(
                "error", code, f"{agent_path} is not the agent osbuilder.yaml records (sha256 "
                f"{report.agent['sha256'][:12]}..., recorded {str(recorded['sha256'])[:12]}...)",
                "rebuild the image, or find out who replaced the agent"))
    elif agent_bytes is None and mode in INIT_MODES:
        report.findings.append(Finding("error", "agent-missing", f"there is no agent at {agent_path}",
                                       "rebuild the image with --agent"))

    packages = installed_packages(summary)
    report.packages = packages
    dax = report.layout.get("dax") or {}
    if dax.get("present") and not dax.get("checksum_ok"):
        report.findings.append(Finding("error", "dax-header-checksum", "the NVDIMM pfn block's checksum is wrong",
                                       "rebuild the image; the kernel will not honour this DAX header"))
    verity = report.layout.get("verity") or {}
    if verity.get("hash_partition") and not verity.get("root_hash_sidecar"):
        report.findings.append(Finding("warning", "verity-sidecar-missing",
                                       f"the image has a dm-verity hash partition but no {ROOT_HASH_NAME} beside it",
                                       f"keep the {ROOT_HASH_NAME} osbuilder wrote next to the image"))
    report.tree = {
        "observed_init": observed,
        "dbus_socket": any(view.stat(f"{d}/dbus.socket") is not None for d in UNIT_SEARCH_PATH),
        "dbus_wanted": _wanted_by(view, "kata-containers.target", "dbus.socket"),
        "agent_unit": view.stat(f"{ETC_UNIT_DIR}/basic.target.wants/kata-containers.target") is not None,
    }
    return report


def inspect_many(path: Path, workdir: Path, runner: Runner) -> list[Report]:
    """One report per artifact: a Kata release (tarball or directory) holds several."""
    from osbuilder.release import release_artifacts

    path = Path(path)
    if not path.exists():
        raise UserError(f"artifact '{path}' does not exist", "pass an image, initrd, ISO, rootfs or Kata release")
    found = release_artifacts(path, workdir, runner)
    if found is None:
        return [inspect_artifact(path, workdir, runner)]
    return [inspect_artifact(p, workdir, runner) for p in found]
