"""The dnf recipes (CentOS Stream, CBL-Mariner/Azure Linux, Fedora), proven against local
repositories: their mirrors are out of reach here. The packages are tiny signed stand-ins
(tests/local_repos/rpm.py) laid out where each recipe's repository URLs point, and the real
`dnf --installroot` installs them through osbuilder's generated configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.local_repos.rpm import CHRONY_GID, RPM_DISTROS, served_rpm_mirror
from tests.helpers import validate_manifest

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def rpm_mirror(tmp_path_factory):
    with served_rpm_mirror(tmp_path_factory.mktemp("rpm-repos"), RPM_DISTROS, ("x86_64", "aarch64")) as mirror:
        yield mirror


def build(distro: str, init: str, out: Path, mirror: str, keyring: Path, agent: Path, *extra: str):
    return run_cli("rootfs", "--distro", distro, "--init", init, "--agent", agent, "--mirror", mirror,
                   "--keyring", keyring, "-o", out, "--json", *extra)


def recorded_packages(tree: Path) -> dict[str, str]:
    from osbuilder.rootfs.summary import installed_packages, parse_summary

    summary = parse_summary((tree / "var/lib/osbuilder/osbuilder.yaml").read_text())
    return {p["name"]: p["architecture"] for p in installed_packages(summary)}


@pytest.mark.parametrize("init", ["agent", "systemd"])
def test_centos_installs_with_dnf_in_both_init_modes(rpm_mirror, tmp_path, host_agent, init):
    mirror, keyring, _ = rpm_mirror
    tree = tmp_path / "rootfs"
    result = build("centos", init, tree, mirror, keyring, host_agent)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["init_mode"] == init
    packages = recorded_packages(tree)
    # iptables pulled iptables-libs in through a soname dependency; systemd pulled dbus.
    assert {"filesystem", "chrony", "iptables", "iptables-libs", "libseccomp"} <= set(packages)
    assert ("systemd" in packages) == (init == "systemd")
    assert "gpg-pubkey" not in packages  # the imported key is not a package
    assert set(packages.values()) == {"x86_64"}
    assert (tree / "sbin").is_symlink() and (tree / "usr/sbin/init").exists()
    # Provisioning found chrony's RPM-style paths: the pool is commented out, chronyd.service overridden.
    assert "# pool 2.centos.pool.ntp.org" in (tree / "etc/chrony.conf").read_text()
    # rpm found the group in the guest's /etc/group, not the host's.
    keys = (tree / "etc/chrony.keys").stat()
    assert (keys.st_uid, keys.st_gid, oct(keys.st_mode & 0o777)) == (0, CHRONY_GID, "0o640")
    override = (tree / "etc/systemd/system/chronyd.service.d/osbuilder.conf").read_text()
    assert "ExecStart=/usr/sbin/chronyd $OPTIONS" in override  # without -u chrony
    if init == "systemd":
        assert (tree / "usr/lib/systemd/system/kata-agent.service").is_file()
    else:
        assert (tree / "usr/sbin/init").read_bytes() == host_agent.read_bytes()
    assert not list(Path("/var/log").glob("dnf*")), "dnf wrote to the host's /var/log"
    # dnf's record of expired repositories went to the install root joined with its cache
    # directory, a host path; that trail is gone, the directories the packages own are kept.
    assert sorted(p.name for p in (tree / "tmp").iterdir()) == []
    assert not list(tree.rglob("expired_repos.json"))


def test_azurelinux_is_an_alias_of_cbl_mariner(rpm_mirror, tmp_path, host_agent):
    mirror, keyring, _ = rpm_mirror
    tree = tmp_path / "rootfs"
    result = build("azurelinux", "agent", tree, mirror, keyring, host_agent)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["distro"] == "cbl-mariner"
    assert {"kata-packages-uvm", "e2fsprogs", "chrony"} <= set(recorded_packages(tree))


def test_fedora_records_packages_from_its_sysimage_database(rpm_mirror, tmp_path, host_agent):
    mirror, keyring, _ = rpm_mirror
    tree = tmp_path / "rootfs"
    result = build("fedora", "agent", tree, mirror, keyring, host_agent)
    assert result.returncode == 0, result.stderr
    assert "iptables-nft" in recorded_packages(tree)


def test_aarch64_installs_with_forcearch(rpm_mirror, tmp_path, agent_aarch64):
    mirror, keyring, _ = rpm_mirror
    tree = tmp_path / "rootfs"
    result = build("centos", "agent", tree, mirror, keyring, agent_aarch64, "--arch", "aarch64")
    assert result.returncode == 0, result.stderr
    assert set(recorded_packages(tree).values()) == {"aarch64"}


def test_packages_signed_by_another_key_are_refused(rpm_mirror, tmp_path, host_agent):
    mirror, _, other = rpm_mirror
    result = build("centos", "agent", tmp_path / "rootfs", mirror, other, host_agent)
    assert result.returncode == 1
    assert "GPG check FAILED" in result.stderr and "Public key for" in result.stderr
    assert "--keyring" in result.stderr
    assert not (tmp_path / "rootfs").exists()


def test_an_unsupported_arch_lists_the_supported_ones(tmp_path, host_agent):
    result = run_cli("rootfs", "--distro", "cbl-mariner", "--init", "agent", "--agent", host_agent,
                     "--arch", "s390x", "-o", tmp_path / "out")
    assert result.returncode == 2
    assert result.error_lines == ["osbuilder: error: distro 'cbl-mariner' does not support arch 's390x'; "
                                  "use --arch x86_64 or --arch aarch64"]


def test_slim_removes_the_package_manager_and_the_manifest_and_sbom_still_list_it(rpm_mirror, tmp_path, host_agent):
    mirror, keyring, _ = rpm_mirror
    out = tmp_path / "out"
    result = run_cli("build", "--distro", "centos", "--init", "agent", "--agent", host_agent, "--mirror", mirror,
                     "--keyring", keyring, "--extra-packages", "dnf", "--slim", "--format", "initrd",
                     "--sbom", "cyclonedx", "-o", out)
    assert result.returncode == 0, result.stderr
    manifest = validate_manifest(out / "manifest.json")
    packages = {p["name"]: p for p in manifest["packages"]}
    assert {"dnf", "python3", "rpm", "chrony", "iptables"} <= set(packages)  # as installed before slimming
    assert [name for name, p in sorted(packages.items()) if p.get("files_removed")] == ["dnf", "python3", "rpm"]
    slim = manifest["slim"]
    assert slim["packages"] == ["dnf", "python3", "rpm"] and slim["files"] == 4
    rules = {rule["rule"]: rule["files"] for rule in slim["rules"]}
    assert (rules["package dnf"], rules["package python3"], rules["package rpm"]) == (1, 1, 2)
    bom = json.loads((out / "sbom.cdx.json").read_text())
    marked = {c["name"] for c in bom["components"]
              if {"name": "osbuilder:files-removed", "value": "true"} in c.get("properties", [])}
    assert marked == {"dnf", "python3", "rpm"}
    listing = run_cli("inspect", out / "kata-containers-initrd.img", "--json")
    files = json.loads(listing.stdout)
    assert files["packages"]["count"] == len(packages)
