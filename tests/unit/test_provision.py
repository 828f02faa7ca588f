"""The provisioning stage on a hand-made tree: fast, and able to plant hostile links."""

import dataclasses
import os
from pathlib import Path

import pytest

from osbuilder.rootfs.agent import check_agent
from osbuilder.foundation.arch import get_arch
from osbuilder.config import make_rootfs_options
from osbuilder.foundation.errors import BuildError, UserError
from osbuilder.foundation.fsutil import GuestRoot
from osbuilder.rootfs.provision import Provisioner
from osbuilder.foundation.templates import Templates
from osbuilder.rootfs.validate import validate_tree
from tests.helpers import fake_bootstrap

@pytest.fixture
def host_files(tmp_path: Path) -> dict[str, Path]:
    files = {}
    for name in ("resolv.conf", "chrony.conf", "hostname"):
        path = tmp_path / "host" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"host {name}\n")
        files[name] = path
    return files


def plant_hostile_bootstrap(root: Path, host_files: dict[str, Path], with_systemd: bool) -> None:
    fake_bootstrap(root, with_systemd)
    # A hostile link an image might ship: an absolute path naming a file on the build host.
    (root / "etc/resolv.conf").unlink()
    os.symlink(str(host_files["resolv.conf"]), root / "etc/resolv.conf")
    os.symlink(str(host_files["hostname"]), root / "etc/hostname")


@pytest.mark.parametrize("init_mode", ["agent", "systemd"])
def test_provisioning_never_writes_through_host_links(tmp_path, host_files, host_agent, init_mode):
    root = tmp_path / "rootfs"
    plant_hostile_bootstrap(root, host_files, with_systemd=init_mode == "systemd")
    before = {name: path.read_text() for name, path in host_files.items()}
    config, recipe = make_rootfs_options({"distro": "debian", "init": init_mode, "agent": host_agent,
                                  "output": tmp_path / "out", "arch": "x86_64"})
    agent = check_agent(host_agent, get_arch("x86_64"))
    guest = GuestRoot(root)
    Provisioner(guest, config, recipe, agent, Templates()).run()
    validate_tree(guest, init_mode, get_arch("x86_64"), agent)

    assert {name: path.read_text() for name, path in host_files.items()} == before
    resolv = root / "etc/resolv.conf"
    assert resolv.is_file() and not resolv.is_symlink() and resolv.stat().st_size == 0
    # mmdebstrap copies the build host's name; the guest's is the same on every build host.
    hostname = root / "etc/hostname"
    assert not hostname.is_symlink() and hostname.read_text() == "localhost\n"
    chrony = (root / "etc/chrony/chrony.conf").read_text().splitlines()
    assert "# pool 2.debian.pool.ntp.org iburst" in chrony and "# server a" in chrony and "keyfile x" in chrony
    assert "refclock PHC /dev/ptp0 poll 3 dpoll -2 offset 0" in chrony and "makestep 1 -1" in chrony
    override = (root / "etc/systemd/system/chrony.service.d/osbuilder.conf").read_text()
    assert "ExecStart=!/usr/sbin/chronyd $DAEMON_OPTS" in override
    assert os.readlink(root / "var/tmp") == "../tmp"
    for gone in ("var/cache", "var/log", "var/lib/dpkg", "usr/share/doc"):
        assert not (root / gone).exists()


def provision_systemd_shaped_tree(tmp_path, host_files, host_agent, init_mode):
    """A tree that ships systemd, provisioned for `init_mode`: (guest, agent)."""
    root = tmp_path / "rootfs"
    plant_hostile_bootstrap(root, host_files, with_systemd=True)
    config, recipe = make_rootfs_options({"distro": "debian", "init": init_mode, "agent": host_agent,
                                  "output": tmp_path / "out", "arch": "x86_64"})
    agent = check_agent(host_agent, get_arch("x86_64"))
    guest = GuestRoot(root)
    Provisioner(guest, config, recipe, agent, Templates()).run()
    return guest, agent


def test_validation_catches_a_systemd_init_in_agent_mode(tmp_path, host_files, host_agent):
    guest, agent = provision_systemd_shaped_tree(tmp_path, host_files, host_agent, "agent")
    with pytest.raises(UserError, match="systemd is installed"):
        validate_tree(guest, "agent", get_arch("x86_64"), agent)


def test_validation_catches_an_unreachable_agent_service(tmp_path, host_files, host_agent):
    guest, agent = provision_systemd_shaped_tree(tmp_path, host_files, host_agent, "systemd")
    guest.remove("/etc/systemd/system/basic.target.wants/kata-containers.target")
    with pytest.raises(BuildError, match="not reachable from basic.target"):
        validate_tree(guest, "systemd", get_arch("x86_64"), agent)


@pytest.mark.parametrize("init_mode", ["agent", "systemd"])
def test_provisioning_a_hard_linked_clone_leaves_the_original_as_it_was(tmp_path, host_agent, init_mode):
    """Builds provision a clone that shares its files' inodes with the cache's copy
    (cache.py): every change must make a new file, never write through a shared inode."""
    import subprocess

    from osbuilder.foundation.cache import metadata_digest
    from osbuilder.foundation.fsutil import clamp_mtimes

    original = tmp_path / "cached"
    fake_bootstrap(original, with_systemd=init_mode == "systemd")
    (original / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (original / "etc/group").write_text("root:x:0:\n")
    clamp_mtimes(original, 1700000000)  # as the cache keeps it
    contents = {p: p.read_bytes() for p in original.rglob("*") if p.is_file() and not p.is_symlink()}
    before = metadata_digest(original)
    clone = tmp_path / "rootfs"
    subprocess.run(["cp", "--archive", "--link", "--no-target-directory", str(original), str(clone)], check=True)
    overlay = tmp_path / "overlay"
    (overlay / "etc").mkdir(parents=True)
    (overlay / "etc/passwd").write_text("root:x:0:0:overlay:/root:/bin/sh\n")
    (overlay / "etc/chrony").mkdir()
    (overlay / "etc/chrony/chrony.conf").write_text("server overlay\n")
    config, recipe = make_rootfs_options({"distro": "debian", "init": init_mode, "agent": host_agent,
                                          "output": tmp_path / "out", "arch": "x86_64", "overlay": overlay})
    config = dataclasses.replace(config, source_date_epoch=1700000000)
    agent = check_agent(host_agent, get_arch("x86_64"))
    guest = GuestRoot(clone)
    Provisioner(guest, config, recipe, agent, Templates()).run()
    guest.replace_text("/etc/group", (clone / "etc/group").read_text() + "kata:x:1000:\n")
    clamp_mtimes(clone, 1700000000)

    assert (clone / "etc/chrony/chrony.conf").read_text() == "server overlay\n"
    assert (clone / "etc/passwd").read_text() == "root:x:0:0:overlay:/root:/bin/sh\n"
    assert (clone / "etc/group").read_text() == "root:x:0:\nkata:x:1000:\n"
    assert metadata_digest(original) == before
    assert {p: p.read_bytes() for p in contents} == contents
