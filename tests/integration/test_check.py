"""`osbuilder check`: every finding present and absent, the host's cgroup driver from each
source, and the kata-runtime.toml fragment that prevents the mismatches."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.helpers import make_busybox_probe_guest, make_minimal_guest
from tests.unit.test_cli_errors import assert_refused
from tests.integration.test_inspect import AGENT, FORMATS, copy_tree, launcher_tree, pack

pytestmark = pytest.mark.slow  # real mkfs, fsck, debugfs, veritysetup and xorriso

KATA_SHARE = "/opt/kata/share/kata-containers"


@pytest.fixture(scope="module")
def guests(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("check-guests")
    found = {mode: make_minimal_guest(base / mode, AGENT, mode) for mode in ("agent", "systemd")}
    found["probe"] = make_busybox_probe_guest(base / "probe", "x86_64", AGENT)
    return found


@pytest.fixture(scope="module")
def artifacts(guests, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("check-artifacts")
    made = {}
    for mode in ("agent", "systemd"):
        for fmt in ("initrd", "initrd-zstd", "ext4-dax", "ext4", "erofs", "xfs", "verity"):
            made[f"{mode}-{fmt}"] = pack(guests[mode], out / f"{mode}-{fmt}" / "artifact", FORMATS[fmt])
    made["probe-initrd"] = pack(guests["probe"], out / "probe" / "artifact", FORMATS["initrd"])
    return made


def runtime_config(path: Path, slot: str, artifact: Path | str, **settings: object) -> Path:
    lines = ["[hypervisor.qemu]", f'{slot} = "{artifact}"']
    for key, value in settings.items():
        lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def check(*args: object) -> tuple[int, dict]:
    result = run_cli("check", *args, "--json")
    assert "Traceback" not in result.stderr and result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def codes(report: dict) -> list[str]:
    """The findings' codes, less host-driver-unknown: that info is reported whenever no source
    names the host's driver, and these tests compare an image with its runtime config alone
    (test_the_host_driver_sources_conflict_or_are_unknown asserts it)."""
    return sorted(f["code"] for f in report["findings"] if f["code"] != "host-driver-unknown")


def test_agent_mode_with_a_systemd_host_is_a_warning(artifacts, tmp_path: Path):
    code, report = check(artifacts["agent-initrd"], "--host-cgroup-driver", "systemd")
    assert code == 0 and codes(report) == ["agent-init-host-systemd"]
    finding = report["findings"][0]
    assert finding["severity"] == "warning" and "no systemd properties" in finding["message"]
    assert "--init systemd" in finding["fix"]
    code, report = check(artifacts["agent-initrd"], "--host-cgroup-driver", "cgroupfs")
    assert code == 0 and codes(report) == []
    code, report = check(artifacts["systemd-initrd"], "--host-cgroup-driver", "systemd")
    assert code == 0 and codes(report) == []


def test_systemd_mode_without_dbus_is_an_error(guests, tmp_path: Path):
    unwanted = copy_tree(guests["systemd"], tmp_path / "unwanted")
    (unwanted / "etc/systemd/system/kata-containers.target.wants/dbus.socket").unlink()
    no_dbus = copy_tree(guests["systemd"], tmp_path / "no-dbus")
    (no_dbus / "etc/systemd/system/kata-containers.target.wants/dbus.socket").unlink()
    (no_dbus / "usr/lib/systemd/system/dbus.socket").unlink()
    for tree, words in ((unwanted, "not wanted by kata-containers.target"), (no_dbus, "no D-Bus at all")):
        code, report = check(tree, "--host-cgroup-driver", "systemd")
        assert code == 1 and codes(report) == ["systemd-without-dbus"] and words in report["findings"][0]["message"]
    code, report = check(guests["systemd"], "--host-cgroup-driver", "systemd")
    assert code == 0 and codes(report) == []


def test_init_that_contradicts_the_mode_is_an_error(guests, tmp_path: Path):
    systemd_tree = copy_tree(guests["systemd"], tmp_path / "systemd")
    (systemd_tree / "usr/sbin/init").unlink()
    shutil.copy2(AGENT, systemd_tree / "usr/sbin/init")
    code, report = check(systemd_tree)
    assert code == 1 and codes(report) == ["init-not-systemd"]
    agent_tree = copy_tree(guests["agent"], tmp_path / "agent")
    (agent_tree / "usr/sbin/init").unlink()
    os.symlink("/bin/busybox", agent_tree / "usr/sbin/init")  # any binary that is not the agent it records
    shutil.copy2("/usr/bin/true", agent_tree / "usr/bin/busybox")
    code, report = check(agent_tree)
    assert code == 1 and codes(report) == ["init-not-agent"]
    for tree in (guests["systemd"], guests["agent"]):
        assert check(tree)[0] == 0


def test_dax_header_against_disable_image_nvdimm(artifacts, tmp_path: Path):
    dax, plain = artifacts["agent-ext4-dax"], artifacts["agent-ext4"]
    cases = [(dax, True, ["dax-header-unused"], 0), (dax, False, [], 0),
             (plain, False, ["dax-header-missing"], 1), (plain, True, [], 0)]
    for image, disabled, expected, exit_code in cases:
        config = runtime_config(tmp_path / "c.toml", "image", image, disable_image_nvdimm=disabled)
        code, report = check("--runtime-config", config)
        assert (code, codes(report)) == (exit_code, expected), (image, disabled)
    info = check("--runtime-config", runtime_config(tmp_path / "c.toml", "image", dax, disable_image_nvdimm=True))[1]
    assert info["findings"][0]["severity"] == "info"


def test_rootfs_type_and_verity_parameters(artifacts, tmp_path: Path):
    erofs = artifacts["agent-erofs"]
    config = runtime_config(tmp_path / "c.toml", "image", erofs, rootfs_type="ext4", disable_image_nvdimm=True)
    assert codes(check("--runtime-config", config)[1]) == ["rootfs-type-mismatch"]
    config = runtime_config(tmp_path / "c.toml", "image", erofs, rootfs_type="erofs", disable_image_nvdimm=True)
    assert check("--runtime-config", config) == (0, check("--runtime-config", config)[1])
    assert codes(check("--runtime-config", config)[1]) == []

    verity = artifacts["systemd-verity"]
    params = verity.with_name("root_hash_base.txt").read_text().strip()
    without = runtime_config(tmp_path / "c.toml", "image", verity)
    code, report = check("--runtime-config", without)
    assert code == 1 and codes(report) == ["verity-params-missing"]
    wrong_salt = runtime_config(tmp_path / "c.toml", "image", verity,
                                kernel_params=params.replace("salt=", "salt=00"))
    assert codes(check("--runtime-config", wrong_salt)[1]) == ["verity-params-missing"]
    right = runtime_config(tmp_path / "c.toml", "image", verity, kernel_params=f"quiet {params}")
    assert check("--runtime-config", right)[0] == 0


def kernel_config(path: Path, *options: str) -> Path:
    path.write_text("# a guest kernel's .config\n" + "".join(f"{o}=y\n" for o in options)
                    + "# CONFIG_RD_XZ is not set\n")
    return path


def test_initrd_compression_and_kernel_architecture(artifacts, tmp_path: Path):
    x86_gzip = kernel_config(tmp_path / "x86-gzip.config", "CONFIG_X86_64", "CONFIG_RD_GZIP")
    x86_both = kernel_config(tmp_path / "x86-both.config", "CONFIG_X86_64", "CONFIG_RD_GZIP", "CONFIG_RD_ZSTD")
    arm = kernel_config(tmp_path / "arm.config", "CONFIG_ARM64", "CONFIG_RD_GZIP", "CONFIG_RD_ZSTD")
    zstd = artifacts["agent-initrd-zstd"]
    assert codes(check(zstd, "--kernel-config", x86_gzip)[1]) == ["initrd-compression-unsupported"]
    assert check(zstd, "--kernel-config", x86_both)[0] == 0
    assert check(artifacts["agent-initrd"], "--kernel-config", x86_gzip)[0] == 0
    code, report = check(zstd, "--kernel-config", arm)
    assert code == 1 and codes(report) == ["kernel-arch-mismatch"]
    # The kernel file the runtime config names decides too.
    arm_kernel = tmp_path / "Image"
    arm_kernel.write_bytes(bytes(0x38) + b"ARM\x64" + bytes(64))
    config = runtime_config(tmp_path / "c.toml", "initrd", zstd, kernel=str(arm_kernel))
    assert codes(check("--runtime-config", config)[1]) == ["kernel-arch-mismatch"]
    x86_kernel = tmp_path / "vmlinuz"
    x86_kernel.write_bytes(bytes(0x202) + b"HdrS" + bytes(64))
    config = runtime_config(tmp_path / "c.toml", "initrd", zstd, kernel=str(x86_kernel))
    assert check("--runtime-config", config)[0] == 0


def test_slots_and_missing_paths(artifacts, tmp_path: Path):
    image, initrd = artifacts["agent-ext4-dax"], artifacts["agent-initrd"]
    assert codes(check("--runtime-config", runtime_config(tmp_path / "c.toml", "initrd", image))[1]) == [
        "artifact-in-wrong-slot"]
    assert codes(check("--runtime-config", runtime_config(tmp_path / "c.toml", "image", initrd))[1]) == [
        "artifact-in-wrong-slot"]
    assert check("--runtime-config", runtime_config(tmp_path / "c.toml", "initrd", initrd))[0] == 0
    missing = runtime_config(tmp_path / "c.toml", "image", tmp_path / "nowhere.img")
    code, report = check("--runtime-config", missing)
    assert code == 1 and codes(report) == ["artifact-missing"]


def test_the_probe_agent_is_an_error(artifacts, tmp_path: Path):
    config = runtime_config(tmp_path / "c.toml", "initrd", artifacts["probe-initrd"])
    code, report = check("--runtime-config", config)
    assert code == 1 and codes(report) == ["probe-agent"]
    assert check("--runtime-config", runtime_config(tmp_path / "c.toml", "initrd", artifacts["agent-initrd"]))[0] == 0


def test_a_launcher_image_with_a_systemd_host_is_an_error(guests, tmp_path: Path):
    tree = launcher_tree(guests, tmp_path)
    code, report = check(tree, "--host-cgroup-driver", "systemd")
    assert code == 1 and codes(report) == ["launcher-host-systemd"]
    assert check(tree, "--host-cgroup-driver", "cgroupfs") == (0, check(tree, "--host-cgroup-driver", "cgroupfs")[1])


CONTAINERD_V1 = """version = 2
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = true
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
  runtime_type = "io.containerd.kata.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata.options]
    SystemdCgroup = {value}
"""
CONTAINERD_V2 = """version = 3
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.kata-qemu]
  runtime_type = "io.containerd.kata.v2"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.kata-qemu.options]
    SystemdCgroup = {value}
"""


@pytest.mark.parametrize("layout", [CONTAINERD_V1, CONTAINERD_V2], ids=["containerd-1.x", "containerd-2.x"])
def test_the_host_driver_comes_from_the_kata_handler_in_containerd(artifacts, tmp_path: Path, layout: str):
    initrd = artifacts["agent-initrd"]
    for value, expected in (("true", ["agent-init-host-systemd"]), ("false", [])):
        config = tmp_path / "config.toml"
        config.write_text(layout.format(value=value))
        code, report = check(initrd, "--containerd-config", config)
        assert codes(report) == expected
        source = report["host_cgroup_driver"]["source"]
        assert str(config) in source and "SystemdCgroup" in source and "kata" in source


def test_the_host_driver_sources_in_order(artifacts, tmp_path: Path):
    initrd = artifacts["agent-initrd"]
    crio = tmp_path / "crio.conf"
    crio.write_text('[crio.runtime]\ncgroup_manager = "systemd"\n')
    kubelet = tmp_path / "kubelet.yaml"
    kubelet.write_text("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: cgroupfs\n")
    no_kata = tmp_path / "containerd.toml"
    no_kata.write_text(CONTAINERD_V1.split("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.kata]")[0])
    code, report = check(initrd, "--crio-config", crio, "--kubelet-config", kubelet)
    assert report["host_cgroup_driver"]["value"] == "systemd" and "cgroup_manager" in report["host_cgroup_driver"]["source"]
    # CRI-O and the kubelet disagree: an error naming each source and its value.
    assert code == 1 and codes(report) == ["agent-init-host-systemd", "host-driver-conflict"]
    conflict = next(f for f in report["findings"] if f["code"] == "host-driver-conflict")
    assert conflict["severity"] == "error" and conflict["sources"] == [
        {"source": f"{crio}: [crio.runtime] cgroup_manager = systemd", "value": "systemd"},
        {"source": f"{kubelet}: cgroupDriver = cgroupfs", "value": "cgroupfs"}]
    assert str(crio) in conflict["message"] and str(kubelet) in conflict["message"]
    # containerd without a Kata handler does not decide; CRI-O does.
    report = check(initrd, "--containerd-config", no_kata, "--crio-config", crio)[1]
    assert "crio.conf" in report["host_cgroup_driver"]["source"]
    report = check(initrd, "--kubelet-config", kubelet)[1]
    source = {"value": "cgroupfs", "source": f"{kubelet}: cgroupDriver = cgroupfs"}
    assert report["host_cgroup_driver"] == {**source, "sources": [source]}
    code, report = check(initrd, "--host-cgroup-driver", "cgroupfs", "--crio-config", crio)
    assert report["host_cgroup_driver"]["source"] == "--host-cgroup-driver"
    assert code == 1 and codes(report) == ["host-driver-conflict"]  # the flag decides, and the conflict is said
    assert check(initrd, "--host-cgroup-driver", "cgroupfs", "--kubelet-config", kubelet)[1]["findings"] == []
    text = run_cli("check", initrd, "--crio-config", crio)
    assert f"host cgroup driver: systemd (from {crio}" in text.stdout


def test_the_gate_fails_on_the_severity_asked_for(artifacts, tmp_path: Path):
    """The seed's case, an agent-as-init image on a host asking for systemd, is a warning:
    a pipeline gating with --fail-on warning stops it; no host driver at all is an info."""
    initrd = artifacts["agent-initrd"]
    assert check(initrd, "--host-cgroup-driver", "systemd")[0] == 0
    code, report = check(initrd, "--host-cgroup-driver", "systemd", "--fail-on", "warning")
    assert code == 1 and report["ok"] is False and report["fail_on"] == "warning"
    warning = report["findings"][0]
    assert (warning["severity"], warning["code"]) == ("warning", "agent-init-host-systemd")
    assert warning["sources"] == [{"source": "--host-cgroup-driver", "value": "systemd"}]
    text = run_cli("check", initrd, "--host-cgroup-driver", "systemd", "--fail-on", "warning")
    assert text.returncode == 1 and "check: FAILED" in text.stdout
    # No source for the host's driver: an info that names what to pass; --fail-on info demands it.
    code, report = check(initrd)
    assert code == 0 and [f["code"] for f in report["findings"]] == ["host-driver-unknown"]
    unknown = report["findings"][0]
    assert unknown["severity"] == "info" and "--host-cgroup-driver" in unknown["fix"]
    assert check(initrd, "--fail-on", "warning")[0] == 0
    assert check(initrd, "--fail-on", "info")[0] == 1
    assert check(initrd, "--host-cgroup-driver", "cgroupfs", "--fail-on", "info")[0] == 0
    refused = run_cli("check", initrd, "--fail-on", "fatal")
    assert refused.returncode == 2 and "--fail-on" in refused.stderr


@pytest.mark.parametrize("mode", ["agent", "systemd"])
@pytest.mark.parametrize("fmt", ["initrd", "initrd-zstd", "ext4-dax", "ext4", "erofs", "xfs", "verity"])
def test_the_matching_runtime_fragment_passes_check(artifacts, tmp_path: Path, mode: str, fmt: str):
    artifact = artifacts[f"{mode}-{fmt}"]
    fragment = tmp_path / "kata-runtime.toml"
    result = run_cli("inspect", artifact, "--runtime-config-fragment", fragment, "--install-path", artifact.parent)
    assert result.returncode == 0, result.stderr
    text = fragment.read_text()
    assert f'{FORMATS[fmt][0]} = "{artifact}"' in text and "[hypervisor.qemu]" in text
    code, report = check("--runtime-config", fragment, "--host-cgroup-driver", "cgroupfs")
    assert (code, codes(report)) == (0, []), text
    assert report["checked"][0]["artifact"] == str(artifact)
    default = run_cli("inspect", artifact, "--runtime-config-fragment", tmp_path / "default.toml",
                      "--hypervisor", "clh")
    assert default.returncode == 0
    assert f'"{KATA_SHARE}/artifact"' in (tmp_path / "default.toml").read_text()
    assert "[hypervisor.clh]" in (tmp_path / "default.toml").read_text()


@pytest.mark.parametrize("case", ["not toml", "no section", "bad containerd", "bad kubelet", "bad kernel config",
                                  "missing file"])
def test_bad_configuration_files_name_the_file(artifacts, tmp_path: Path, case: str):
    out = tmp_path / "out"
    out.mkdir()
    bad = tmp_path / "bad"
    flag, text, fragment = {
        "not toml": ("--runtime-config", "[hypervisor.qemu\nimage = 1\n", "line 1"),
        "no section": ("--runtime-config", "[runtime]\nx = 1\n", "no [hypervisor.<name>] section"),
        "bad containerd": ("--containerd-config", "version = = 2\n", "containerd config"),
        "bad kubelet": ("--kubelet-config", "cgroupDriver: [systemd\n", "line"),
        "bad kernel config": ("--kernel-config", "CONFIG_X86_64=y\nthis is no option\n", "line 2"),
        "missing file": ("--crio-config", None, "does not exist"),
    }[case]
    if text is not None:
        bad.write_text(text)
    result = run_cli("check", artifacts["agent-initrd"], flag, bad)
    assert_refused(result, fragment, out)
    assert str(bad) in result.error_lines[0]


def test_the_launcher_fixture_runs_an_x86_elf_as_init(guests, tmp_path: Path):
    from osbuilder.foundation.arch import arch_of_elf
    from osbuilder.foundation.elf import read_elf_header

    tree = launcher_tree(guests, tmp_path)
    assert arch_of_elf(read_elf_header(tree / "usr/sbin/init")).name == "x86_64"
    assert (tree / "usr/sbin/init").read_bytes() != (tree / "usr/bin/kata-agent").read_bytes()
