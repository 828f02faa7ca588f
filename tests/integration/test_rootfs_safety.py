"""Failure, interruption and hostile trees leave the host and the output untouched."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from osbuilder.rootfs.agent import check_agent
from osbuilder.foundation.arch import get_arch
from osbuilder.rootfs.bootstrap import bootstrap
from osbuilder.config import make_rootfs_options
from osbuilder.foundation.fsutil import GuestRoot
from osbuilder.rootfs.provision import Provisioner
from osbuilder.foundation.runner import Runner
from osbuilder.foundation.templates import Templates
from osbuilder.rootfs.validate import validate_tree
from tests.helpers import WatchedCommand, seen
from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def test_absolute_resolv_conf_link_in_a_real_tree_never_writes_to_the_host(tmp_path, cache_dir, agent_x86_64):
    sentinel = tmp_path / "host-resolv.conf"
    sentinel.write_text("nameserver 192.0.2.1\n")
    config, recipe = make_rootfs_options({"distro": "debian", "init": "agent", "agent": agent_x86_64, "arch": "x86_64",
                                  "output": tmp_path / "unused", "cache_dir": cache_dir})
    tree = tmp_path / "tree"
    work = tmp_path / "work"
    work.mkdir()
    bootstrap(config, recipe, tree, work, Runner())
    (tree / "etc/resolv.conf").unlink()
    os.symlink(str(sentinel), tree / "etc/resolv.conf")
    os.symlink(str(sentinel.parent), tree / "etc/chrony/sources.d-host")
    agent = check_agent(agent_x86_64, get_arch("x86_64"))
    Provisioner(GuestRoot(tree), config, recipe, agent, Templates()).run()
    validate_tree(GuestRoot(tree), "agent", get_arch("x86_64"), agent)
    assert sentinel.read_text() == "nameserver 192.0.2.1\n"
    assert (tree / "etc/resolv.conf").is_file() and not (tree / "etc/resolv.conf").is_symlink()


def test_failed_bootstrap_leaves_nothing(tmp_path, agent_x86_64):
    work = tmp_path / "work"
    work.mkdir()
    result = run_cli("rootfs", "--distro", "debian", "--init", "agent", "--agent", agent_x86_64,
                     "--extra-packages", "no-such-package-osbuilder", "-o", work / "out")
    assert result.returncode == 1
    assert "command 'mmdebstrap' exited with code" in result.stderr
    assert "no-such-package-osbuilder" in result.stderr
    assert list(work.iterdir()) == []


def test_ctrl_c_removes_staging_and_stops_the_bootstrap(tmp_path, agent_x86_64):
    work = tmp_path / "work"
    work.mkdir()
    build = WatchedCommand("rootfs", "--distro", "debian", "--init", "agent", "--agent", agent_x86_64,
                           "-o", work / "out")
    # mmdebstrap is under way: staging exists and it has reported its first phase.
    build.wait_for(lambda lines: seen("mmdebstrap: ")(lines) and any(work.glob(".out.osbuilder-*")), timeout=120)
    stderr = build.interrupt(signal.SIGINT)
    proc = build.proc
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    assert list(work.iterdir()) == []
    leftover = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True).stdout
    assert leftover == "", "a child process outlived the interrupt"


def test_force_replaces_an_existing_output(rootfs, tmp_path, cache_dir, agent_x86_64):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old-file").write_text("old")
    result = run_cli("rootfs", "--distro", "debian", "--init", "agent", "--agent", agent_x86_64,
                     "--cache-dir", cache_dir, "--force", "-o", out)
    assert result.returncode == 0, result.stderr
    assert not (out / "old-file").exists() and (out / "usr/sbin/init").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_missing_binfmt_handler_is_registered():
    from osbuilder.rootfs.binfmt import BINFMT_DIR, ensure_binfmt

    arch = get_arch("aarch64")
    entry = BINFMT_DIR / arch.qemu_user
    was_enabled = entry.exists() and entry.read_text().startswith("enabled")
    try:
        if entry.exists():
            subprocess.run(["update-binfmts", "--disable", arch.qemu_user], check=True)
        assert not entry.exists() or "disabled" in entry.read_text()
        ensure_binfmt(arch, Runner())
        assert entry.read_text().startswith("enabled")
    finally:
        # Leave the host's handler as the test found it, whatever happened above.
        enabled_now = entry.exists() and entry.read_text().startswith("enabled")
        if was_enabled and not enabled_now:
            subprocess.run(["update-binfmts", "--enable", arch.qemu_user], check=False)
        elif not was_enabled and enabled_now:
            subprocess.run(["update-binfmts", "--disable", arch.qemu_user], check=False)
