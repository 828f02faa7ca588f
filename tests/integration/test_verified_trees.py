"""A tree osbuilder checked is not checked again while it is unchanged, and is checked again
once it is not (issue 27): the record is the tree's verified digest in the cache
(foundation/verified.py). Each change below makes the closure check fail, so a packer that
skipped it would pack the tree instead of refusing it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.hostile import small_guest

pytestmark = pytest.mark.slow

SKIPPED = "is unchanged since osbuilder checked it"
CLOSURE = "the guest would fail at run time"


@pytest.fixture
def guest(tmp_path):
    """A small tree `rootfs` built and recorded, in a cache of its own."""
    cache = tmp_path / "cache"  # rootfs records into $XDG_CACHE_HOME/osbuilder, its default cache
    root = small_guest(tmp_path, env={"XDG_CACHE_HOME": str(cache)})
    assert len(list((cache / "osbuilder" / "verified").iterdir())) == 1
    return root, cache


def pack(root: Path, cache: Path, out: Path):
    return run_cli("-v", "image", root, "--cache-dir", cache / "osbuilder", "-o", out, "--force")


def add_scripts(root: Path) -> None:
    (root / "usr/bin/helper").write_text("#!/bin/sh\nexit 0\n")
    (root / "usr/bin/tool").write_text("#!/usr/bin/helper\n")
    for name in ("helper", "tool"):
        os.chmod(root / "usr/bin" / name, 0o755)


def test_a_tree_rootfs_checked_is_packed_without_checking_it_again(guest, tmp_path):
    root, cache = guest
    first = pack(root, cache, tmp_path / "a.img")
    assert first.returncode == 0, first.stderr
    assert SKIPPED in first.stderr
    # A copy is another tree (its own inodes and ctimes): checked, then recorded in turn.
    copy = tmp_path / "copy"
    subprocess.run(["cp", "--archive", root, copy], check=True)  # device nodes and FIFOs too
    checked = pack(copy, cache, tmp_path / "b.img")
    assert checked.returncode == 0 and SKIPPED not in checked.stderr, checked.stderr
    again = pack(copy, cache, tmp_path / "c.img")
    assert again.returncode == 0 and SKIPPED in again.stderr, again.stderr


def test_a_file_added_since_is_checked(guest, tmp_path):
    root, cache = guest
    shutil.copy("/usr/bin/gpg", root / "usr/bin/extra")  # a dynamic ELF whose libraries the guest lacks
    result = pack(root, cache, tmp_path / "a.img")
    assert result.returncode == 2 and SKIPPED not in result.stderr
    assert f"{CLOSURE}: /usr/bin/extra needs its dynamic linker" in result.stderr


def test_a_file_removed_since_is_checked(guest, tmp_path):
    root, cache = guest
    add_scripts(root)
    recorded = pack(root, cache, tmp_path / "a.img")
    assert recorded.returncode == 0 and SKIPPED not in recorded.stderr, recorded.stderr
    assert SKIPPED in pack(root, cache, tmp_path / "b.img").stderr
    (root / "usr/bin/helper").unlink()
    result = pack(root, cache, tmp_path / "c.img")
    assert result.returncode == 2 and SKIPPED not in result.stderr
    assert CLOSURE in result.stderr and "/usr/bin/tool" in result.stderr


def test_a_file_rewritten_since_is_checked_even_with_its_size_and_mtime_kept(guest, tmp_path):
    root, cache = guest
    add_scripts(root)
    assert pack(root, cache, tmp_path / "a.img").returncode == 0
    helper = root / "usr/bin/helper"
    before = os.stat(helper)
    with open(helper, "r+b") as f:  # the same size, another interpreter
        f.write(b"#!/bin/no")
    os.utime(helper, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(helper).st_size == before.st_size
    result = pack(root, cache, tmp_path / "b.img")
    assert result.returncode == 2 and SKIPPED not in result.stderr
    assert CLOSURE in result.stderr and "/usr/bin/helper" in result.stderr


def test_build_does_not_repeat_the_check_it_made(tmp_path):
    tree = small_guest(tmp_path / "made")
    result = run_cli("-v", "build", "--existing", tree, "--distro", "debian", "--init", "agent", "--probe-agent",
                     "--format", "image", "-o", tmp_path / "out", "--no-cache")
    assert result.returncode == 0, result.stderr
    assert "was checked by this build: its closure check is not repeated" in result.stderr
