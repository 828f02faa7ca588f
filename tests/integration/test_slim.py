"""--slim on the real Debian tree (Debian's mirror): both init modes slimmed, checked closed,
packed as initrds and booted, the probe reporting the driver its mode implies (under systemd
through a working D-Bus) and what the guest costs in RAM."""

from __future__ import annotations

import json

import pytest

from osbuilder.foundation.fsutil import GuestRoot
from osbuilder.rootfs.summary import installed_packages, parse_summary
from tests.conftest import run_cli
from tests.integration.booting import assert_probe, boot, pack

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("init", ["agent", "systemd"])
def test_a_slim_debian_guest_boots_in_both_init_modes(cache_dir, boot_cache, tmp_path, init):
    tree = tmp_path / "rootfs"
    result = run_cli("rootfs", "--distro", "debian", "--init", init, "--probe-agent", "--slim",
                     "--cache-dir", cache_dir, "-o", tree, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["init_mode"] == init
    guest = GuestRoot(tree)  # links resolve inside the guest (iptables is an alternatives link)
    for gone in ("/usr/bin/perl", "/usr/bin/apt", "/usr/bin/dpkg", "/usr/lib/x86_64-linux-gnu/gconv",
                 "/usr/share/zoneinfo"):
        assert not guest.lexists(gone), gone
    for kept in ("/usr/sbin/iptables", "/usr/sbin/chronyd", "/usr/sbin/cryptsetup", "/usr/sbin/mkfs.ext4", "/bin/sh"):
        assert guest.exists(kept), kept
    summary = parse_summary((tree / "var/lib/osbuilder/osbuilder.yaml").read_text())
    packages = installed_packages(summary)
    marked = {p["name"] for p in packages if p.get("files-removed") == "yes"}
    assert {"apt", "dpkg", "perl-base"} <= marked and "libc6" not in marked and "chrony" not in marked
    assert len(packages) > 80  # every package as installed, slimmed or not
    assert summary["slim"]["bytes"] > 50 * 2**20 and summary["slim"]["files"] > 1000
    initrd = pack("initrd", tree, tmp_path / "initrd.img")
    result, report = boot(initrd, boot_cache, "--host-cgroup-driver", "systemd")
    probe = assert_probe(result, report, tree, "systemd")
    assert probe["cgroup_driver"] == ("systemd" if init == "systemd" else "cgroupfs")
