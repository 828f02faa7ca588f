"""The rough edges a new user hit, each as they met it: flags before the command, a closed
pipe, a kernel that is not one, a release tarball's members named as such, directories
that are no release, config-file spellings and typos, a command without its action, and
--help that shows every default. Real builds of small trees, the real command line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from tests.helpers import fake_bootstrap, make_busybox_probe_guest

SHARE = "opt/kata/share/kata-containers"


def probe_tree(root: Path) -> Path:
    """A bootstrap's shape with a shell, which the probe agent runs in."""
    fake_bootstrap(root, with_systemd=False)
    shutil.copy("/bin/busybox", root / "usr/bin/sh")
    return root


@pytest.fixture(scope="module")
def probe_initrd(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("rough-edges")
    tree = make_busybox_probe_guest(work / "tree", "x86_64", Path("/bin/busybox"))
    initrd = work / "probe.initrd"
    assert run_cli("initrd", tree, "-o", initrd).returncode == 0
    return initrd


def test_json_works_before_the_command_as_after_it():
    before, after = run_cli("--json", "distros"), run_cli("distros", "--json")
    assert before.returncode == after.returncode == 0, before.stderr
    assert json.loads(before.stdout) == json.loads(after.stdout)


def test_a_closed_pipe_stops_it_quietly():
    """`osbuilder distros | head -1`: the reader is gone before the writing ends (here, before
    it starts, so the test does not race): no error line, SIGPIPE's status."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "osbuilder", "distros"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=60)
    finally:
        os.close(write_end)
    assert proc.stderr == "" and proc.returncode == 141


@pytest.mark.parametrize("content", [None, os.urandom(4096), b""], ids=["passwd", "random bytes", "empty"])
def test_a_kernel_that_is_not_one_is_refused_before_qemu(probe_initrd, tmp_path, content):
    kernel = Path("/etc/passwd")
    if content is not None:
        kernel = tmp_path / "vmlinuz"
        kernel.write_bytes(content)
    result = run_cli("boot", probe_initrd, "--kernel", kernel, "--timeout", "30")
    assert result.returncode == 2, result.stderr
    assert f"kernel '{kernel}' is not a kernel: it is" in result.stderr
    assert "did not appear" not in result.stderr + result.stdout  # qemu never ran


def test_a_release_tarball_s_artifact_is_named_by_its_member(tmp_path):
    tree = probe_tree(tmp_path / "tree")
    out = tmp_path / "out"
    built = run_cli("build", "--distro", "debian", "--init", "agent", "--probe-agent", "--existing", tree,
                    "--layout", "kata", "--tarball", "-o", out)
    assert built.returncode == 0, built.stderr
    tarball = out / "kata-static-rootfs-initrd.tar.zst"
    member = f"./{SHARE}/kata-containers-initrd.img"
    report = json.loads(run_cli("inspect", tarball, "--json").stdout)
    assert report["artifact"]["path"] == f"{tarball}:{member}"
    text = run_cli("inspect", tarball)
    assert text.stdout.startswith(f"{tarball}:{member}: initrd")
    checked = json.loads(run_cli("check", tarball, "--json").stdout)
    assert checked["checked"][0]["artifact"] == f"{tarball}:{member}"


def test_inspect_takes_a_rootfs_or_a_release_directory_only(probe_initrd, tmp_path):
    # A directory that holds images somewhere below, not where a release keeps them.
    stray = tmp_path / "downloads" / "old" / "stuff"
    stray.mkdir(parents=True)
    shutil.copy(probe_initrd, stray / "kata-containers-initrd.img")
    refused = run_cli("inspect", tmp_path / "downloads")
    assert refused.returncode == 2 and "neither a rootfs nor a Kata release" in refused.stderr
    # A plain build's output (the link at its top) and the kata layout (share/kata-containers) are.
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(probe_initrd, plain / "kata-containers-initrd.img")
    kata = tmp_path / "kata" / SHARE
    kata.mkdir(parents=True)
    shutil.copy(probe_initrd, kata / "kata-debian-bookworm.initrd")
    os.symlink("kata-debian-bookworm.initrd", kata / "kata-containers-initrd.img")
    for release in (plain, tmp_path / "kata"):
        inspected = run_cli("inspect", release, "--json")
        assert inspected.returncode == 0, inspected.stderr
        assert json.loads(inspected.stdout)["artifact"]["kind"] == "initrd"


def test_config_files_take_toml_spellings_and_suggest_the_key_meant(tmp_path):
    tree = probe_tree(tmp_path / "tree")
    config = tmp_path / "build.toml"
    config.write_text(f'distro = "debian"\ninit = "agent"\nprobe_agent = true\nexisting = "{tree}"\n')
    built = run_cli("build", "--config", config, "-o", tmp_path / "out")
    assert built.returncode == 0, built.stderr
    config.write_text('distro = "debian"\nfromat = ["initrd"]\n')
    typo = run_cli("build", "--config", config, "-o", tmp_path / "out2")
    assert typo.returncode == 2 and "unknown key 'fromat'; did you mean 'format'?" in typo.stderr


def test_a_command_without_its_action_shows_the_actions():
    result = run_cli("cache")
    assert result.returncode == 2
    assert "list or clean" in result.stderr and "ACTION is required" not in result.stderr


def test_help_shows_every_default_and_init_mode():
    text = " ".join(run_cli("build", "--help").stdout.split())
    for shown in ("(default: initrd)", "(default: gzip)", "(default: ext4)", "agent|systemd|launcher|none"):
        assert shown in text, shown
    initrd = " ".join(run_cli("initrd", "--help").stdout.split())
    assert "agent|systemd|launcher|none" in initrd and "(default: gzip)" in initrd
