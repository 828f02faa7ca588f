"""`osbuilder check`: an artifact against the host that will run it. What upstream leaves to
a panic at the first container, reported before the image ships (reference sections 2, 8)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osbuilder.foundation.arch import arch_of_kernel_config, kernel_arch
from osbuilder.foundation.cgroups import SYSTEMD_DRIVER
from osbuilder.foundation.errors import UserError
from osbuilder.host.findings import Finding
from osbuilder.host.hostconfig import HostDriver, HypervisorSection, kernel_config
from osbuilder.rootfs.initmode import INIT_MODES
from osbuilder.inspect import Report, inspect_many
from osbuilder.pack.registry import PACKERS, runtime_slot_keys
from osbuilder.foundation.runner import Runner



@dataclass
class CheckResult:
    host_driver: HostDriver | None
    subjects: list[dict[str, Any]] = field(default_factory=list)  # what was checked against what
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.severity == "error")

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.errors == 0,
                "host_cgroup_driver": {"value": self.host_driver.value, "source": self.host_driver.source}
                if self.host_driver else None,
                "checked": self.subjects, "findings": [f.as_json() for f in self.findings]}


def _host_findings(report: Report, host: HostDriver | None, subject: str) -> list[Finding]:
    shape = INIT_MODES.get(report.init_mode)
    found = []
    if shape is None or host is None or host.value != SYSTEMD_DRIVER or shape.runs_systemd:
        return found
    if shape.agent_is_init:
        found.append(Finding(
            "warning", "agent-init-host-systemd",
            f"the host asks for the systemd cgroup driver ({host.source}), but the agent is PID 1 and uses "
            "cgroupfs whatever the host asks: container cgroups inside the guest get no systemd properties "
            "(slices, delegation, resource settings applied through systemd)",
            "build a systemd-mode image (--init systemd) if containers need the systemd driver inside the guest",
            subject))
    else:
        found.append(Finding(
            "error", "launcher-host-systemd",
            f"the host asks for the systemd cgroup driver ({host.source}); in this image /sbin/init launches the "
            "agent, so the agent is not PID 1, follows the host and asks a systemd that is not there",
            "run this image only with the cgroupfs driver, or use an agent-mode or systemd-mode image", subject))
    return found


def _image_findings(report: Report) -> list[Finding]:
    subject = str(report.artifact.path)
    found = []
    mode = INIT_MODES.get(report.init_mode)
    # The agent asks systemd for container cgroups over D-Bus when systemd runs it.
    if mode is not None and mode.runs_systemd and not (report.tree.get("dbus_socket") and report.tree.get("dbus_wanted")):
        missing = "no D-Bus at all" if not report.tree.get("dbus_socket") else \
            "dbus.socket is not wanted by kata-containers.target"
        found.append(Finding("error", "systemd-without-dbus",
                             f"systemd-mode image with {missing}: the agent cannot use the systemd cgroup driver",
                             "rebuild the image with osbuilder (it links dbus.socket into kata-containers.target)",
                             subject))
    if report.agent.get("probe"):
        found.append(Finding("error", "probe-agent",
                             "the image holds osbuilder's probe agent: it reports its boot and powers the guest off",
                             "build the image with --agent, the real kata-agent", subject))
    return found


def _slot_findings(report: Report, section: HypervisorSection) -> list[Finding]:
    """The artifact against the section that names it: the slot its packer fills, and each
    setting that packer says the slot must carry."""
    subject = f"hypervisor.{section.name}"
    artifact = report.artifact
    found = []
    packer = PACKERS.get(artifact.kind)  # None: a rootfs directory
    fills = packer.runtime_slot.key if packer and packer.runtime_slot else None
    if section.slot is not None and fills != section.slot:
        noun = packer.noun if packer else "a rootfs directory"
        found.append(Finding("error", "artifact-in-wrong-slot",
                             f"'{artifact.path}' is {noun} but the runtime config names it as the {section.slot}",
                             f"set {fills} = ... instead of {section.slot}" if fills else
                             f"a runtime boots none of these: name {' or '.join(runtime_slot_keys())}", subject))
    for setting in packer.runtime_settings(artifact) if packer else []:
        if not setting.satisfied_by(section.value(setting.key, setting.default)):
            found.append(Finding(setting.severity, setting.code, setting.problem, setting.fix, subject))
    return found


def _kernel_findings(report: Report, kernel_options: dict[str, str] | None, kernel_file_arch: str | None,
                     subject: str) -> list[Finding]:
    artifact = report.artifact
    found = []
    if artifact.codec is not None and kernel_options is not None and artifact.codec.kernel_config:
        if kernel_options.get(artifact.codec.kernel_config) != "y":
            found.append(Finding("error", "initrd-compression-unsupported",
                                 f"the initrd is {artifact.codec.name}-compressed but the guest kernel does not set "
                                 f"{artifact.codec.kernel_config}=y: it cannot unpack it",
                                 "rebuild the initrd with --compression gzip, or the kernel with that option",
                                 subject))
    config_arch = arch_of_kernel_config(kernel_options) if kernel_options else None
    kernel_arches = {a for a in (kernel_file_arch, config_arch.name if config_arch else None) if a}
    if report.arch and any(a != report.arch for a in kernel_arches):
        found.append(Finding("error", "kernel-arch-mismatch",
                             f"the kernel is for {', '.join(sorted(kernel_arches))}, the image for {report.arch}",
                             f"use a {report.arch} kernel, or build the image with --arch "
                             f"{sorted(kernel_arches)[0]}", subject))
    return found


def check(artifact: Path | None, sections: list[HypervisorSection], host: HostDriver | None,
          kernel_config_path: Path | None, workdir: Path, runner: Runner) -> CheckResult:
    if artifact is None and not sections:
        raise UserError("nothing to check", "pass an ARTIFACT, or --runtime-config naming one")
    kernel_options = kernel_config(kernel_config_path) if kernel_config_path else None
    result = CheckResult(host)
    targets: list[tuple[Path, HypervisorSection | None]] = []
    if artifact is not None:
        targets = [(Path(artifact), section) for section in sections] or [(Path(artifact), None)]
    for section in sections if artifact is None else []:
        if section.artifact is None:
            result.findings.append(Finding("error", "no-artifact", "the section names neither image nor initrd",
                                           "set image = ... or initrd = ...", f"hypervisor.{section.name}"))
            continue
        path = Path(section.artifact)
        if not path.exists():
            result.findings.append(Finding("error", "artifact-missing", f"{section.slot} '{path}' does not exist",
                                           "install the artifact there, or fix the path",
                                           f"hypervisor.{section.name}"))
            continue
        targets.append((path, section))
    reports: dict[Path, list[Report]] = {}
    for path, section in targets:
        if path not in reports:
            reports[path] = inspect_many(path, workdir, runner)
            for report in reports[path]:
                result.findings += report.findings + _image_findings(report)
                result.findings += _host_findings(report, host, str(report.artifact.path))
        for report in reports[path]:
            result.subjects.append({"artifact": str(report.artifact.path), "kind": report.artifact.kind,
                                    "init_mode": report.init_mode, "arch": report.arch,
                                    "section": section.name if section else None})
            kernel_file_arch = None
            if section is not None:
                result.findings += _slot_findings(report, section)
                if section.kernel and Path(section.kernel).is_file():
                    found = kernel_arch(Path(section.kernel))
                    kernel_file_arch = found.name if found else None
            subject = f"hypervisor.{section.name}" if section else str(report.artifact.path)
            result.findings += _kernel_findings(report, kernel_options, kernel_file_arch, subject)
    return result

