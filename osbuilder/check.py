"""`osbuilder check`: an artifact against the host that will run it. What upstream leaves to
a panic at the first container, reported before the image ships (docs/kata-contract.md:
the cgroup-driver rule, runtime configuration)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osbuilder.foundation.arch import arch_of_kernel_config, kernel_arch
from osbuilder.foundation.cgroups import SYSTEMD_DRIVER
from osbuilder.foundation.errors import UserError
from osbuilder.host.findings import Finding, at_or_above
from osbuilder.host.hostconfig import HostDriver, HostDrivers, HypervisorSection, kernel_config
from osbuilder.rootfs.initmode import INIT_MODES
from osbuilder.inspect import Report, inspect_many
from osbuilder.pack.artifact import ArtifactInfo
from osbuilder.pack.verity import BLOCK, parse_verity_params, read_root_hash
from osbuilder.read.extension import extension_problem
from osbuilder.rootfs.extension_mount import MOUNT_ROOT, name_problem, serial
from osbuilder.pack.registry import PACKERS, runtime_slot_keys
from osbuilder.foundation.runner import Runner
from osbuilder.updates import UpdatesOptions, add_updates



@dataclass
class CheckResult:
    host: HostDrivers
    fail_on: str = "error"  # the least severity that fails the check
    subjects: list[dict[str, Any]] = field(default_factory=list)  # what was checked against what
    findings: list[Finding] = field(default_factory=list)

    @property
    def host_driver(self) -> HostDriver | None:
        return self.host.decided

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.severity == "error")

    @property
    def failing(self) -> list[Finding]:
        """The findings at or above --fail-on: any fails the check (exit 1)."""
        return at_or_above(self.findings, self.fail_on)

    def as_json(self) -> dict[str, Any]:
        driver = self.host_driver
        return {"ok": not self.failing, "fail_on": self.fail_on,
                "host_cgroup_driver": {"value": driver.value, "source": driver.source,
                                       "sources": [_source(d) for d in self.host.found]} if driver else None,
                "checked": self.subjects, "findings": [f.as_json() for f in self.findings]}


def _source(driver: HostDriver) -> dict[str, str]:
    return {"source": driver.source, "value": driver.value}


def _driver_findings(host: HostDrivers) -> list[Finding]:
    """Sources that disagree, or none at all: the comparisons below rest on the host's driver."""
    if host.conflict:
        said = "; ".join(f"{d.source} says {d.value}" for d in host.found)
        return [Finding("error", "host-driver-conflict",
                        f"the host's configurations disagree about the cgroup driver ({said}): containers would run "
                        f"under one driver while the runtime expects the other",
                        "make containerd's SystemdCgroup, CRI-O's cgroup_manager, the kubelet's cgroupDriver and "
                        "--host-cgroup-driver name the same driver", "host",
                        tuple(_source(d) for d in host.found))]
    if not host.found:
        return [Finding("info", "host-driver-unknown",
                        "no source names the host's cgroup driver, so the image was not compared with it",
                        "pass --host-cgroup-driver systemd|cgroupfs, or the host's --containerd-config, "
                        "--crio-config or --kubelet-config", "host")]
    return []


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
            subject, (_source(host),)))
    else:
        found.append(Finding(
            "error", "launcher-host-systemd",
            f"the host asks for the systemd cgroup driver ({host.source}); in this image /sbin/init launches the "
            "agent, so the agent is not PID 1, follows the host and asks a systemd that is not there",
            "run this image only with the cgroupfs driver, or use an agent-mode or systemd-mode image", subject,
            (_source(host),)))
    return found


def _image_findings(report: Report) -> list[Finding]:
    subject = report.shown
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


def _extension_findings(section: HypervisorSection, base_reports: list[Report], workdir: Path,
                        runner: Runner) -> list[Finding]:
    """The section's guest_extension_images (docs/kata-contract.md, composable guests) against the images they
    name and the base that must mount them."""
    entries = section.extension_images
    if not entries:
        return []
    found: list[Finding] = []
    where = f"hypervisor.{section.name}.guest_extension_images"
    for report in base_reports:
        mode = INIT_MODES.get(report.init_mode)
        missing = report.tree.get("extension_mount")
        if mode is None or not mode.mounts_extensions:
            able = [name for name, m in INIT_MODES.items() if m.mounts_extensions]
            found.append(Finding("error", "extension-base-cannot-mount",
                                 f"the base '{report.shown}' is in init mode {report.init_mode}: only a "
                                 f"{' or '.join(able)} base runs Kata's extension mount, so its "
                                 f"{len(entries)} extension(s) are never mounted",
                                 f"boot the extensions with a base built with --init {able[0]}, or drop them",
                                 where))
        elif missing:
            found.append(Finding("error", "extension-base-cannot-mount",
                                 f"the base '{report.shown}' cannot mount extensions: it lacks "
                                 f"{', '.join(missing)}", "rebuild the base with osbuilder (it installs the "
                                 "extension mount and veritysetup)", where))
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        subject = f"{where}[{index}]"
        name = str(entry.get("name") or "")
        problem = name_problem(name) if name else "no name is given"
        if problem is not None:
            found.append(Finding("error", "extension-name-invalid", f"extension name {problem}: it is never mounted",
                                 "name it with at most 10 letters, digits, '_' or '-'", subject))
        elif name in seen:
            found.append(Finding("error", "extension-name-duplicate",
                                 f"the extension name '{name}' is given twice: both disks get the serial "
                                 f"{serial(name)}, and the guest mounts one of them",
                                 "give each extension its own name", subject))
        seen.add(name)
        path = entry.get("path")
        if not path or not Path(str(path)).exists():
            found.append(Finding("error", "extension-image-missing", f"extension image '{path}' does not exist",
                                 "install the extension image there, or fix the path", subject))
            continue
        image, why = extension_problem(Path(str(path)), workdir, runner)
        if image is None:
            found.append(Finding("error", "extension-not-extension", f"{why}: the guest would mount it as an "
                                 "extension", "name an image built with osbuilder build --init none", subject))
            continue
        found += _verity_findings(image.artifact, str(entry.get("verity_params") or ""), subject)
        if image.recorded_name and name and image.recorded_name != name:
            found.append(Finding("warning", "extension-name-mismatch",
                                 f"the image records the extension name '{image.recorded_name}' but the table "
                                 f"names it '{name}': it is mounted at {MOUNT_ROOT}/{name}",
                                 f'set name = "{image.recorded_name}" if the guest looks for it there', subject))
    return found


def _verity_findings(artifact: ArtifactInfo, params: str, subject: str) -> list[Finding]:
    """verity_params against the image's own hash partition: present exactly when it has one,
    and with the root hash its first hash block gives and the data blocks its data partition holds."""
    fix = "set verity_params to the line of the root_hash_<label>.txt built with the image"
    if not artifact.verity:
        if params:
            return [Finding("error", "extension-verity-mismatch", "verity_params are given but the image has no "
                            "dm-verity hash partition: the guest refuses to mount it", 'set verity_params = ""',
                            subject)]
        return []
    fields = parse_verity_params(params)
    if not fields.get("root_hash") or not fields.get("salt"):
        return [Finding("error", "extension-verity-mismatch", "the image has a dm-verity hash partition but "
                        "verity_params carry no root hash and salt: the guest refuses to mount it unverified",
                        fix, subject)]
    problems = []
    try:
        block = int(fields.get("hash_block_size", BLOCK))
        data_block = int(fields.get("data_block_size", BLOCK))
        data_blocks = int(fields.get("data_blocks", -1))
        if read_root_hash(artifact.path, artifact.partitions[1][0], fields["salt"], block, artifact.partitions[0][0],
                          data_blocks, data_block) != fields["root_hash"]:
            problems.append("the root hash is not the one its hash partition gives")
        if data_blocks * data_block != artifact.partitions[0][1]:
            problems.append("data_blocks do not cover its data partition")
    except ValueError:
        problems.append("they are not numbers and hex where they must be")
    if problems:
        return [Finding("error", "extension-verity-mismatch", f"verity_params do not match the image: "
                        f"{'; '.join(problems)}; the guest fails to mount it", fix, subject)]
    return []


def check(artifact: Path | None, sections: list[HypervisorSection], drivers: HostDrivers,
          kernel_config_path: Path | None, workdir: Path, runner: Runner, fail_on: str = "error",
          updates: UpdatesOptions | None = None) -> CheckResult:
    if artifact is None and not sections:
        raise UserError("nothing to check", "pass an ARTIFACT, or --runtime-config naming one")
    kernel_options = kernel_config(kernel_config_path) if kernel_config_path else None
    host = drivers.decided
    result = CheckResult(drivers, fail_on)
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
            if updates is not None:
                add_updates(reports[path], updates, workdir / f"updates-{len(reports)}", runner)
            for report in reports[path]:
                result.findings += report.findings + _image_findings(report)
                result.findings += _host_findings(report, host, report.shown)
        for report in reports[path]:
            result.subjects.append({"artifact": report.shown, "kind": report.artifact.kind,
                                    "init_mode": report.init_mode, "arch": report.arch,
                                    "section": section.name if section else None})
            kernel_file_arch = None
            if section is not None:
                result.findings += _slot_findings(report, section)
                if section.kernel and Path(section.kernel).is_file():
                    found = kernel_arch(Path(section.kernel))
                    kernel_file_arch = found.name if found else None
            subject = f"hypervisor.{section.name}" if section else report.shown
            result.findings += _kernel_findings(report, kernel_options, kernel_file_arch, subject)
    for section in sections:
        base = [r for path, s_ in targets if s_ is section for r in reports.get(path, [])]
        result.findings += _extension_findings(section, base, workdir, runner)
    result.findings += _driver_findings(drivers)
    return result

