"""Real Debian trees from Debian's mirror through mmdebstrap, in both init modes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import magic
import pytest

from osbuilder.foundation.fsutil import sha256_file
from osbuilder.foundation.fsutil import GuestRoot
from osbuilder.rootfs.summary import parse_summary

pytestmark = pytest.mark.slow
EPOCH = "1700000000"


def summary_of(tree: Path) -> dict:
    return parse_summary((tree / "var/lib/osbuilder/osbuilder.yaml").read_text())


def assert_common_guest_facts(tree: Path) -> None:
    guest = GuestRoot(tree)
    resolv = tree / "etc/resolv.conf"
    assert resolv.is_file() and not resolv.is_symlink() and resolv.stat().st_size == 0
    for gone in ("var/cache", "var/log", "var/lib/dpkg", "usr/share/doc", "usr/share/man", "usr/share/locale"):
        assert not os.path.lexists(tree / gone), gone
    assert os.readlink(tree / "var/tmp") == "../tmp"
    chrony = guest.read_text("/etc/chrony/chrony.conf").splitlines()
    assert "refclock PHC /dev/ptp0 poll 3 dpoll -2 offset 0" in chrony and "makestep 1 -1" in chrony
    assert not any(line.startswith(("pool ", "server ", "peer ")) for line in chrony)
    override = guest.read_text("/etc/systemd/system/chrony.service.d/osbuilder.conf")
    assert "ConditionPathExists=/dev/ptp0" in override and "ReadWritePaths=-/var/lib/chrony" in override
    assert guest.resolve("/usr/sbin/chronyd").is_file() and guest.resolve("/usr/sbin/iptables").exists()


def test_agent_mode_x86_64(rootfs, agent_x86_64):
    tree = rootfs.get("agent", "x86_64", agent_x86_64, "--agent-version", "3.2.0",
                      env={"SOURCE_DATE_EPOCH": EPOCH})
    guest = GuestRoot(tree)
    init = guest.resolve("/sbin/init")
    assert init.is_file() and not (tree / "usr/sbin/init").is_symlink()
    assert sha256_file(init) == sha256_file(agent_x86_64)
    assert not guest.resolve("/usr/lib/systemd/systemd").exists(), "agent-mode tree must have no systemd init"
    assert not guest.lexists("/usr/bin/kata-agent")
    assert list(tree.glob("usr/lib/x86_64-linux-gnu/libseccomp.so.2*")), "seccomp library missing"
    for name, major, minor in (("console", 5, 1), ("tty", 5, 0), ("ttyS0", 4, 64), ("null", 1, 3), ("zero", 1, 5)):
        st = (tree / "dev" / name).lstat()
        assert stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (major, minor)
    assert os.readlink(tree / "dev/fd") == "/proc/self/fd"
    assert_common_guest_facts(tree)

    data = summary_of(tree)
    assert data["file-format-version"] == "0.0.2" and data["architecture"] == "x86_64"
    assert data["rootfs-creation-time"] == "2023-11-14T22:13:20Z"
    assert data["base-distro"]["name"] == "debian" and data["base-distro"]["version"] == "bookworm"
    assert "libseccomp2" in data["base-distro"]["packages"]["default"]
    assert "init" not in data["base-distro"]["packages"]["default"]
    agent = data["agent"]
    assert agent["agent-is-init-daemon"] == "yes" and agent["init-mode"] == "agent"
    assert agent["cgroup-driver"] == "cgroupfs" and agent["version"] == "3.2.0"
    assert agent["sha256"] == sha256_file(agent_x86_64)
    newest = max(p.lstat().st_mtime for p in [tree, *tree.rglob("*")])
    assert newest <= int(EPOCH), "provisioning left mtimes newer than SOURCE_DATE_EPOCH"


def test_systemd_mode_x86_64(rootfs, agent_x86_64):
    tree = rootfs.get("systemd", "x86_64", agent_x86_64)
    guest = GuestRoot(tree)
    assert guest.resolve("/sbin/init") == guest.resolve("/usr/lib/systemd/systemd")
    assert guest.resolve("/sbin/init").is_file()
    agent = tree / "usr/bin/kata-agent"
    assert agent.is_file() and sha256_file(agent) == sha256_file(agent_x86_64)
    assert sha256_file(guest.resolve("/sbin/init")) != sha256_file(agent_x86_64)
    units = tree / "usr/lib/systemd/system"
    service = (units / "kata-agent.service").read_text()
    assert "ExecStart=/usr/bin/kata-agent" in service and "Wants=kata-containers.target" in service
    assert "Requires=kata-agent.service" in (units / "kata-containers.target").read_text()
    etc = tree / "etc/systemd/system"
    assert os.readlink(etc / "basic.target.wants/kata-containers.target") == "/usr/lib/systemd/system/kata-containers.target"
    assert os.readlink(etc / "kata-containers.target.wants/dbus.socket") == "/usr/lib/systemd/system/dbus.socket"
    assert guest.resolve("/usr/lib/systemd/system/dbus.socket").is_file()
    assert "mode=1777,strictatime,nosuid,nodev" in (etc / "tmp.mount").read_text()
    assert_common_guest_facts(tree)
    data = summary_of(tree)["agent"]
    assert data["agent-is-init-daemon"] == "no" and data["init-mode"] == "systemd"
    assert data["cgroup-driver"] == "host" and data["version"] == "unknown"
    assert "init" in summary_of(tree)["base-distro"]["packages"]["default"]


def test_trim_systemd_removes_the_listed_units(rootfs, agent_x86_64):
    tree = rootfs.get("systemd", "x86_64", agent_x86_64, "--trim-systemd")
    guest = GuestRoot(tree)
    for unit in ("systemd-journald.service", "systemd-journald.socket", "systemd-udevd.service",
                 "systemd-random-seed.service", "systemd-tmpfiles-cleanup.timer"):
        assert not guest.lexists(f"/usr/lib/systemd/system/{unit}"), unit
    assert not guest.lexists("/usr/lib/systemd/system-generators/systemd-fstab-generator")
    assert guest.resolve("/usr/lib/systemd/system/kata-agent.service").is_file()


def test_aarch64_agent_mode_through_binfmt(rootfs, agent_aarch64):
    tree = rootfs.get("agent", "aarch64", agent_aarch64)
    guest = GuestRoot(tree)
    assert "ARM aarch64" in magic.from_file(str(guest.resolve("/bin/sh")))
    assert "ARM aarch64" in magic.from_file(str(guest.resolve("/sbin/init")))
    assert summary_of(tree)["architecture"] == "aarch64"
    assert list(tree.glob("usr/lib/aarch64-linux-gnu/libc.so.6"))
