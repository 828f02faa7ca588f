"""Staging cleanup against a real mount (needs root)."""

import subprocess
from pathlib import Path

import pytest

from osbuilder.foundation.errors import BuildError
from osbuilder.foundation.fsutil import remove_tree

pytestmark = pytest.mark.slow


def test_remove_tree_refuses_to_cross_a_mount(tmp_path: Path):
    victim = tmp_path / "staging"
    mnt = victim / "proc"
    mnt.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mnt)], check=True)
    try:
        (mnt / "precious").write_text("x")
        with pytest.raises(BuildError, match="mount point"):
            remove_tree(victim)
        assert (mnt / "precious").read_text() == "x"
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    remove_tree(victim)
    assert not victim.exists()
