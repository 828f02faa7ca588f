"""The review's defects whose tests need root or real filesystem tools: an unreadable file
read as another user, a full filesystem (a small tmpfs), images of a foreign tree, the
verity sidecar's one name."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from osbuilder.foundation.guest_layout import SUMMARY_PATH
from tests.conftest import REPO, run_cli
from tests.helpers import make_minimal_guest
from tests.unit.test_cli_errors import assert_refused
from tests.unit.test_review_defects import aarch64_agent, assert_one_line_failure, guest  # noqa: F401

pytestmark = pytest.mark.slow


def test_an_unreadable_file_in_the_tree_is_one_line(host_agent: Path):
    base = Path(tempfile.mkdtemp(prefix="osbuilder-unreadable-"))
    try:
        os.chmod(base, 0o755)
        tree = make_minimal_guest(base / "guest", host_agent)
        for directory, dirs, files in os.walk(tree):
            for name in dirs + files:
                path = Path(directory, name)
                if not path.is_symlink():
                    path.chmod(path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0))
        secret = tree / "etc/shadow"
        secret.write_text("root:*:19000::::::\n")
        secret.chmod(0o600)
        out = base / "out"
        out.mkdir(mode=0o777)
        out.chmod(0o777)
        for command in (["initrd"], ["image", "--fs", "ext4"], ["iso"]):
            result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                                     "-m", "osbuilder", *command, str(tree), "-o", str(out / "x.bin")],
                                    capture_output=True, text=True, cwd=REPO)
            result.error_lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert_one_line_failure(result, 2, "cannot read", out)
            assert "etc/shadow" in result.error_lines[0] and len(result.error_lines) == 1
            assert list(out.iterdir()) == []
    finally:
        shutil.rmtree(base)


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("command", [["initrd", "--compression", "none"], ["initrd"], ["image", "--fs", "ext4"],
                                     ["iso"]], ids=["initrd-none", "initrd-gzip", "ext4", "iso"])
def test_a_full_output_filesystem_is_one_line_and_leaves_nothing(guest: Path, small_tmpfs: Path, command):
    # Incompressible data, more than the filesystem holds.
    (guest / "usr/share/blob").write_bytes(os.urandom(3 << 20))
    result = run_cli(*command, guest, "-o", small_tmpfs / "artifact")
    assert_one_line_failure(result, 1, "no space left on device", small_tmpfs)
    assert list(small_tmpfs.iterdir()) == []


def test_a_foreign_tree_without_osbuilder_yaml_packs_for_its_own_arch(tmp_path: Path):
    tree = make_minimal_guest(tmp_path / "guest", aarch64_agent(tmp_path / "agent"), arch="aarch64")
    (tree / SUMMARY_PATH.lstrip("/")).unlink()
    out = tmp_path / "out"
    out.mkdir()
    inferred = run_cli("initrd", tree, "--init", "agent", "--json", "-o", out / "a.img")
    assert inferred.returncode == 0, inferred.stderr
    assert json.loads(inferred.stdout)["arch"] == "aarch64"
    given = run_cli("image", tree, "--init", "agent", "--arch", "aarch64", "--no-dax", "-o", out / "b.img")
    assert given.returncode == 0, given.stderr
    refused = tmp_path / "refused"
    refused.mkdir()
    wrong = run_cli("iso", tree, "--init", "agent", "--arch", "x86_64", "-o", refused / "c.iso")
    assert_refused(wrong, "agent is aarch64, target is x86_64", refused)


def test_verity_sidecar_has_one_name_for_every_command(guest: Path, tmp_path: Path):
    result = run_cli("image", guest, "--verity", "--no-dax", "--json", "-o", tmp_path / "custom-name.img")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sidecars"] == [str(tmp_path / "root_hash_base.txt")]
    assert (tmp_path / "root_hash_base.txt").read_text().startswith("root_hash=")
