"""Init mode launcher: a launcher is /sbin/init and starts the agent at /usr/bin/kata-agent,
without systemd; recorded as such, validated, inspected and checked."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

from osbuilder.config import make_rootfs_options
from osbuilder.foundation.errors import BuildError, UserError
from osbuilder.foundation.fsutil import GuestRoot
from osbuilder.rootfs.agent import check_agent
from osbuilder.rootfs.provision import Provisioner
from osbuilder.rootfs.summary import parse_summary
from osbuilder.rootfs.validate import validate_tree
from osbuilder.foundation.templates import Templates
from tests.conftest import run_cli
from tests.helpers import fake_bootstrap

AGENT = Path("/bin/busybox")
LAUNCHER_SCRIPT = """#!/bin/sh
# A tiny launcher, as the tests' stand-in for NVIDIA's NVRC: prepare, then start the agent.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
/usr/bin/kata-agent &
wait
echo o > /proc/sysrq-trigger
while :; do sleep 60; done
"""


def launcher_file(tmp_path: Path) -> Path:
    path = tmp_path / "launcher.sh"
    path.write_text(LAUNCHER_SCRIPT)
    path.chmod(0o755)
    return path


def launcher_guest(tmp_path: Path, launcher: Path) -> GuestRoot:
    root = tmp_path / "rootfs"
    fake_bootstrap(root, with_systemd=False)
    shutil.copy2(AGENT, root / "usr/bin/busybox")
    os.symlink("busybox", root / "usr/bin/sh")
    options, recipe = make_rootfs_options({"distro": "debian", "init": "launcher", "agent": str(AGENT),
                                           "launcher": launcher, "arch": "x86_64"})
    options = dataclasses.replace(options, source_date_epoch=1700000000)
    agent = check_agent(AGENT, options.target)
    guest = GuestRoot(root)
    Provisioner(guest, options, recipe, agent, Templates()).run()
    validate_tree(guest, "launcher", options.target, agent)
    return guest


def test_the_launcher_is_init_and_the_agent_is_a_service_without_systemd(tmp_path: Path):
    launcher = launcher_file(tmp_path)
    guest = launcher_guest(tmp_path, launcher)
    assert guest.resolve("/sbin/init").read_text() == LAUNCHER_SCRIPT
    assert guest.resolve("/usr/bin/kata-agent").read_bytes() == AGENT.read_bytes()
    assert not guest.exists("/usr/lib/systemd/system/kata-agent.service")
    agent = parse_summary(guest.read_text("/var/lib/osbuilder/osbuilder.yaml"))["agent"]
    assert (agent["init-mode"], agent["agent-is-init-daemon"], agent["cgroup-driver"]) == (
        "launcher", "no", "cgroupfs-only")
    assert len(agent["launcher-sha256"]) == 64


def test_a_replaced_launcher_or_a_missing_interpreter_is_refused(tmp_path: Path):
    guest = launcher_guest(tmp_path, launcher_file(tmp_path))
    init = guest.resolve("/sbin/init")
    init.write_text(LAUNCHER_SCRIPT + "# changed\n")
    with pytest.raises(BuildError, match="is not the launcher that was installed"):
        validate_tree(guest, "launcher", guest_arch())
    init.write_text(LAUNCHER_SCRIPT)
    (guest.root / "usr/bin/sh").unlink()
    with pytest.raises(UserError, match="is a script for /bin/sh, which the guest lacks"):
        validate_tree(guest, "launcher", guest_arch())


def guest_arch():
    from osbuilder.foundation.arch import get_arch

    return get_arch("x86_64")


def test_launcher_options_go_together(tmp_path: Path):
    with pytest.raises(UserError, match="pass --launcher FILE"):
        make_rootfs_options({"distro": "debian", "init": "launcher", "agent": str(AGENT)})
    with pytest.raises(UserError, match="--launcher applies to init mode launcher, not agent"):
        make_rootfs_options({"distro": "debian", "init": "agent", "agent": str(AGENT),
                             "launcher": launcher_file(tmp_path)})


def test_inspect_and_check_agree_on_a_launcher_image(tmp_path: Path):
    guest = launcher_guest(tmp_path, launcher_file(tmp_path))
    initrd = tmp_path / "launcher.initrd"
    assert run_cli("initrd", guest.root, "-o", initrd).returncode == 0
    report = json.loads(run_cli("inspect", initrd, "--json").stdout)
    assert report["init_mode"] == {"value": "launcher", "source": "osbuilder.yaml", "inferred": False}
    assert report["cgroup_driver"]["value"] == "cgroupfs-only" and report["findings"] == []
    systemd = run_cli("check", initrd, "--host-cgroup-driver", "systemd", "--json")
    assert systemd.returncode == 1
    assert [f["code"] for f in json.loads(systemd.stdout)["findings"]] == ["launcher-host-systemd"]
    assert run_cli("check", initrd, "--host-cgroup-driver", "cgroupfs").returncode == 0
