"""The same initrd whoever packs it: root, and an ordinary user (setpriv needs root)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from tests.helpers import make_minimal_guest

pytestmark = pytest.mark.slow


@pytest.fixture
def world_readable(tmp_path: Path):
    """A directory an unprivileged user can reach (pytest's own tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="osbuilder-test-"))
    os.chmod(path, 0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=True)


def test_same_tree_same_bytes_from_other_paths_and_as_non_root(world_readable, host_agent):
    tree = make_minimal_guest(world_readable / "guest", host_agent)
    for sub in ("a", "b", "c"):
        (world_readable / sub).mkdir()
        os.chmod(world_readable / sub, 0o777)
    assert run_cli("initrd", tree, "-o", world_readable / "a/one.img").returncode == 0
    assert run_cli("initrd", tree, "-o", world_readable / "b/two.img").returncode == 0
    as_nobody = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-m", "osbuilder", "initrd", str(tree), "-o", str(world_readable / "c/three.img")],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "HOME": str(world_readable)})
    assert as_nobody.returncode == 0, as_nobody.stderr
    assert (world_readable / "c/three.img").stat().st_uid == 65534
    one, two, three = (world_readable / p for p in ("a/one.img", "b/two.img", "c/three.img"))
    assert one.read_bytes() == two.read_bytes() == three.read_bytes()
