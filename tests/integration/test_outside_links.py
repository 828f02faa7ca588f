"""Packers see a tree, not the filesystem around it: a build's tree is a hard-linked clone
of the cache's copy (cache.py), so each of its files has a link outside the tree, and the
artifacts must be byte for byte those of a tree whose files have no other name."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.helpers import make_minimal_guest

pytestmark = pytest.mark.slow  # real mkfs, fsck, debugfs, veritysetup and xorriso

PACKS = {
    "initrd": ("initrd",),
    "ext4": ("image", "--fs", "ext4"),
    "xfs": ("image", "--fs", "xfs"),
    "erofs": ("image", "--fs", "erofs"),
    "iso": ("iso",),
}


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("links")
    alone = make_minimal_guest(work / "alone", Path("/bin/busybox"))
    kept = work / "kept"  # stands for the cache's copy
    subprocess.run(["cp", "--archive", "--no-target-directory", str(alone), str(kept)], check=True)
    clone = work / "clone"
    subprocess.run(["cp", "--archive", "--link", "--no-target-directory", str(kept), str(clone)], check=True)
    assert (clone / "usr/sbin/init").stat().st_nlink == 2 == (kept / "etc/hostname").stat().st_nlink
    assert (alone / "usr/sbin/init").stat().st_nlink == 1
    return alone, clone


@pytest.mark.parametrize("kind", list(PACKS))
def test_links_from_outside_the_tree_change_no_byte(trees, tmp_path, kind):
    alone, clone = trees
    outputs = []
    for tree in (alone, clone):
        out = tmp_path / f"{tree.name}.{kind}"
        result = run_cli(*PACKS[kind], tree, "-o", out)
        assert result.returncode == 0, result.stderr
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
