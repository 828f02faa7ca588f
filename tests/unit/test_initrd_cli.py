"""`osbuilder initrd` on small valid guest trees: bad input, /init, reproducibility."""

from __future__ import annotations

import os
import subprocess
import zlib
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.helpers import make_minimal_guest, read_newc, snapshot
from tests.unit.test_cli_errors import assert_refused


@pytest.fixture
def guest(tmp_path: Path, host_agent: Path) -> Path:
    return make_minimal_guest(tmp_path / "guest", host_agent)


def extract(initrd: Path, dest: Path, decompress: list[str]) -> None:
    dest.mkdir()
    data = subprocess.run(decompress, stdin=open(initrd, "rb"), capture_output=True, check=True).stdout
    subprocess.run(["cpio", "-i", "-d", "-m", "--quiet"], input=data, cwd=dest, check=True)


@pytest.mark.parametrize("init_mode,target", [("agent", "/sbin/init"), ("systemd", "/lib/systemd/systemd")])
def test_init_points_at_the_mode_s_init_and_the_tree_is_untouched(tmp_path, host_agent, init_mode, target):
    tree = make_minimal_guest(tmp_path / "guest", host_agent, init_mode)
    before = snapshot(tree)
    result = run_cli("initrd", tree, "-o", tmp_path / "initrd.img")
    assert result.returncode == 0, result.stderr
    assert f"init mode {init_mode}" in result.stdout
    out = tmp_path / "x"
    extract(tmp_path / "initrd.img", out, ["gzip", "-dc"])
    assert os.readlink(out / "init") == target
    assert snapshot(tree) == before and not (tree / "init").exists()
    assert snapshot(out, skip=("init",)) == snapshot(tree)


def test_explicit_init_must_match_the_recorded_one(tmp_path, guest):
    out = _empty(tmp_path / "out")
    assert_refused(run_cli("initrd", guest, "--init", "systemd", "-o", out / "i.img"),
                   "was built for init mode 'agent', not 'systemd'", out)


def _empty(path: Path) -> Path:
    path.mkdir()
    return path


def test_missing_tree(tmp_path):
    out = _empty(tmp_path / "out")
    assert_refused(run_cli("initrd", tmp_path / "nope", "-o", out / "i.img"), "does not exist", out)


def test_tree_without_sbin_init(tmp_path):
    (tmp_path / "tree/etc").mkdir(parents=True)
    out = _empty(tmp_path / "out")
    assert_refused(run_cli("initrd", tmp_path / "tree", "-o", out / "i.img"), "has no /sbin/init", out)


def test_unknown_compression(tmp_path, guest):
    out = _empty(tmp_path / "out")
    assert_refused(run_cli("initrd", guest, "--compression", "brotli", "-o", out / "i.img"), "invalid choice", out)


def test_output_directory_that_does_not_exist(tmp_path, guest):
    out = _empty(tmp_path / "out")
    assert_refused(run_cli("initrd", guest, "-o", out / "missing" / "i.img"), "does not exist", out)


def test_existing_output_needs_force(tmp_path, guest):
    out = _empty(tmp_path / "out")
    (out / "i.img").write_text("old")
    result = run_cli("initrd", guest, "-o", out / "i.img")
    assert result.returncode == 2 and "pass --force" in result.stderr
    assert (out / "i.img").read_text() == "old"
    assert run_cli("initrd", guest, "--force", "-o", out / "i.img").returncode == 0
    assert (out / "i.img").read_bytes()[:2] == b"\x1f\x8b" and sorted(os.listdir(out)) == ["i.img"]


def test_bad_level(tmp_path, guest):
    out = _empty(tmp_path / "out")
    assert_refused(run_cli("initrd", guest, "--level", "42", "-o", out / "i.img"), "out of range", out)


def test_epoch_comes_from_the_tree_not_the_clock(tmp_path, guest):
    assert run_cli("initrd", guest, "--compression", "none", "-o", tmp_path / "i.cpio").returncode == 0
    members = read_newc((tmp_path / "i.cpio").read_bytes())
    assert {m["mtime"] for m in members} == {1700000000}
    # Inode numbers come from the names (crc32), not from the host's inodes or the order.
    numbers = [m["ino"] for m in members]
    assert len(set(numbers)) == len(numbers) and 0 not in numbers
    assert numbers == [zlib.crc32(m["name"].encode()) for m in members]
    assert {m["devmajor"] for m in members} == {0}
