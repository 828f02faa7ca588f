"""`osbuilder inspect`: how an artifact was built and what it holds, read without mounting
or root, with what can be verified verified (the agent's bytes, the DAX header's checksum,
the declared init mode against the tree). Artifacts osbuilder did not build are described
as far as their bytes allow, and every inferred fact says so."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osbuilder.foundation.arch import arch_of_elf, get_arch
from osbuilder.foundation.elf import parse_elf_header
from osbuilder.foundation.documents import not_regular
from osbuilder.foundation.errors import UserError
from osbuilder.host.findings import Finding
from osbuilder.foundation.guest_layout import AGENT_PATH, ETC_UNIT_DIR, INIT_PATH, UNIT_SEARCH_PATH
from osbuilder.rootfs.initmode import INIT_MODES, UNKNOWN_MODE, modes_starting_agent_as_init, recognise_init_mode
from osbuilder.pack.artifact import ROOTFS_KIND, ArtifactInfo
from osbuilder.pack.image import ROOT_HASH_PATTERN, verity_params_beside
from osbuilder.pack.verity import BLOCK, parse_verity_params, read_root_hash
from osbuilder.rootfs.extension_mount import mount_support
from osbuilder.pack.registry import get_packer
from osbuilder.read.kind import recognise_artifact
from osbuilder.read.summary import open_view, summary_of
from osbuilder.read.view import GuestView
from osbuilder.rootfs.probe import is_probe_script
from osbuilder.rootfs.summary import installed_packages, recorded_agent, recorded_extension
from osbuilder.foundation.runner import Runner


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
    extension: dict[str, Any] | None = None  # an extension image: its name, root hash and contents
    findings: list[Finding] = field(default_factory=list)
    name: str = ""  # what the report calls the artifact: TARBALL:MEMBER for a tarball's (default its path)
    updates: Any = None  # updates.UpdatesReport, with --updates

    @property
    def shown(self) -> str:
        return self.name or str(self.artifact.path)

    @property
    def init_mode(self) -> str:
        return self.facts["init_mode"].value

    @property
    def arch(self) -> str | None:
        return self.facts["arch"].value

    def as_json(self) -> dict[str, Any]:
        return {
            "artifact": {"path": self.shown, "kind": self.artifact.kind, "size": self.artifact.size},
            **{name: fact.as_json() for name, fact in self.facts.items()},
            "agent": self.agent,
            "packages": {"count": len(self.packages), "list": self.packages} if self.packages is not None else None,
            "layout": self.layout,
            "extension": self.extension,
            **({"updates": self.updates.as_json()} if self.updates is not None else {}),
            "findings": [f.as_json() for f in self.findings],
        }


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
    if artifact.kind != ROOTFS_KIND:
        layout.update(get_packer(artifact.kind).layout_facts(artifact, view))
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

    observed_mode, why = recognise_init_mode(view)
    observed = observed_mode.name if observed_mode else UNKNOWN_MODE
    declared = recorded.get("init-mode")
    legacy = recorded.get("agent-is-init-daemon")
    if declared in INIT_MODES:
        facts["init_mode"] = Fact(declared, "osbuilder.yaml")
        if observed != declared:
            report.findings.append(Finding(
                "error", f"init-not-{declared}", f"osbuilder.yaml declares init mode '{declared}' but {why}: "
                "the guest fails at boot", f"rebuild the image with --init {declared}"))
    elif legacy in ("yes", "no"):
        # Kata's own osbuilder records only whether the agent is init.
        agreeing = modes_starting_agent_as_init(legacy == "yes")
        value = observed_mode if observed_mode in agreeing else agreeing[0]
        facts["init_mode"] = Fact(value.name, f"agent-is-init-daemon: {legacy}, {why}", True)
        if observed_mode is not None and observed_mode not in agreeing:
            report.findings.append(Finding(
                "error", f"init-not-{agreeing[0].name}",
                f"osbuilder.yaml says agent-is-init-daemon: {legacy} but {why}: "
                "the guest fails at boot", "rebuild the image so that /sbin/init matches how the agent starts"))
    else:
        facts["init_mode"] = Fact(observed, why, True)
    mode = INIT_MODES.get(report.init_mode)
    facts["cgroup_driver"] = Fact(mode.cgroup_driver if mode else UNKNOWN_MODE,
                                  "the agent's rule for this init mode: cgroupfs as PID 1, else the host's driver",
                                  facts["init_mode"].inferred)

    agent_path = mode.agent_path if mode else AGENT_PATH
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

    probe = recorded.get("probe") == "yes" or is_probe_script(agent_bytes)
    report.agent = {
        "path": agent_path, "present": agent_bytes is not None, "name": recorded.get("name"),
        "version": recorded.get("version"), "sha256": _sha256(agent_bytes) if agent_bytes is not None else None,
        "sha256_recorded": recorded.get("sha256"), "probe": probe, "verified": None,
    }
    if agent_bytes is not None and recorded.get("sha256"):
        report.agent["verified"] = report.agent["sha256"] == recorded["sha256"]
        # Where the agent is /sbin/init, a different binary there is "init is not the agent".
        code = f"init-not-{mode.name}" if mode and mode.agent_is_init else "agent-digest-mismatch"
        if not report.agent["verified"] and code not in {f.code for f in report.findings}:
            report.findings.append(Finding(
                "error", code, f"{agent_path} is not the agent osbuilder.yaml records (sha256 "
                f"{report.agent['sha256'][:12]}..., recorded {str(recorded['sha256'])[:12]}...)",
                "rebuild the image, or find out who replaced the agent"))
    elif agent_bytes is None and mode is not None and mode.holds_agent:
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
                                       f"the image has a dm-verity hash partition but no {ROOT_HASH_PATTERN} beside it",
                                       f"keep the {ROOT_HASH_PATTERN} osbuilder wrote next to the image"))
    if mode is not None and not mode.holds_agent:
        report.extension = _extension_facts(artifact, summary)
    report.tree = {
        # What a base lacks to mount extension images (None: it does not run the mount).
        "extension_mount": list(mount_support(view).missing) if mode is not None and mode.mounts_extensions
        else None,
        "observed_init": observed,
        "dbus_socket": any(view.stat(f"{d}/dbus.socket") is not None for d in UNIT_SEARCH_PATH),
        "dbus_wanted": _wanted_by(view, "kata-containers.target", "dbus.socket"),
        "agent_unit": view.stat(f"{ETC_UNIT_DIR}/basic.target.wants/kata-containers.target") is not None,
    }
    return report


def _extension_facts(artifact: ArtifactInfo, summary: dict[str, Any] | None) -> dict[str, Any]:
    """An extension image's name, size, measurement and contents, as recorded and as read."""
    recorded = recorded_extension(summary)
    facts: dict[str, Any] = {"name": recorded.get("name"), "size": artifact.size, "measured": bool(artifact.verity),
                             "root_hash": None, "root_hash_verified": None, "files": recorded.get("files"),
                             "bytes": recorded.get("bytes"), "top_level": recorded.get("top-level")}
    params = verity_params_beside(artifact) if artifact.verity else None
    if params is not None:
        fields = parse_verity_params(params)
        facts["root_hash"] = fields.get("root_hash")
        if fields.get("salt") is not None and len(artifact.partitions) > 1:
            try:
                computed = read_root_hash(artifact.path, artifact.partitions[1][0], fields["salt"],
                                          int(fields.get("hash_block_size", BLOCK)), artifact.partitions[0][0],
                                          int(fields.get("data_blocks", 0)), int(fields.get("data_block_size", BLOCK)))
            except ValueError:  # a hand-edited line: not hex, not numbers
                computed = None
            facts["root_hash_verified"] = computed == fields.get("root_hash")
    return facts


def inspect_many(path: Path, workdir: Path, runner: Runner) -> list[Report]:
    """One report per artifact: a Kata release (tarball or directory) holds several."""
    from osbuilder.release.layout import release_members

    path = Path(path)
    if not path.exists():
        raise UserError(f"artifact '{path}' does not exist", "pass an image, initrd, ISO, rootfs or Kata release")
    what = None if path.is_dir() else not_regular(path)
    if what is not None:  # a FIFO would block the reader, /dev/zero would never end
        raise UserError(f"artifact '{path}' is {what}, not a file", "pass an image, initrd, ISO, rootfs or Kata release")
    found = release_members(path, workdir, runner)
    if found is None:
        return [inspect_artifact(path, workdir, runner)]
    reports = []
    for member, name in found:
        report = inspect_artifact(member, workdir, runner)
        report.name = name
        verity = report.layout.get("verity") or {}
        if name != str(member) and verity.get("root_hash_sidecar"):  # beside it in the tarball too
            verity["root_hash_sidecar"] = f"{name.rsplit('/', 1)[0]}/{Path(verity['root_hash_sidecar']).name}"
        reports.append(report)
    return reports
