"""initrds of real Debian trees, and `osbuilder build --format initrd`, reproducibly."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.helpers import snapshot

pytestmark = pytest.mark.slow
EPOCH = "1700000000"


def unpack(initrd: Path, dest: Path, decompressor: list[str]) -> None:
    dest.mkdir()
    with open(initrd, "rb") as f:
        data = subprocess.run(decompressor, stdin=f, capture_output=True, check=True).stdout
    subprocess.run(["cpio", "-i", "-d", "-m", "--quiet"], input=data, cwd=dest, check=True)


@pytest.mark.parametrize("init_mode,target,compression,decompressor", [
    ("systemd", "/lib/systemd/systemd", "gzip", ["gzip", "-dc"]),
    ("agent", "/sbin/init", "zstd", ["zstd", "-dc"]),
])
def test_initrd_of_a_real_tree_extracts_to_the_same_tree(rootfs, agent_x86_64, tmp_path, init_mode, target,
                                                         compression, decompressor):
    tree = rootfs.get(init_mode, "x86_64", agent_x86_64)
    before = snapshot(tree)
    initrd = tmp_path / "initrd.img"
    result = run_cli("initrd", tree, "--compression", compression, "-o", initrd)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "unpacked"
    unpack(initrd, out, decompressor)
    assert os.readlink(out / "init") == target
    assert snapshot(out, skip=("init",)) == before
    assert snapshot(tree) == before, "packing modified the tree"


def test_build_writes_initrd_and_manifest_reproducibly(cache_dir, agent_x86_64, tmp_path):
    env = {"SOURCE_DATE_EPOCH": EPOCH}
    common = ["build", "--distro", "debian", "--init", "agent", "--agent", str(agent_x86_64),
              "--format", "initrd"]
    cached = run_cli(*common, "--cache-dir", cache_dir, "-o", tmp_path / "one", env=env)
    assert cached.returncode == 0, cached.stderr
    fresh = run_cli(*common, "-o", tmp_path / "two", "--json", env=env)  # bootstraps afresh from the mirror
    assert fresh.returncode == 0, fresh.stderr
    report = json.loads(fresh.stdout)
    assert report["init_mode"] == "agent" and report["manifest"] == str(tmp_path / "two" / "manifest.json")
    assert [a["path"] for a in report["artifacts"]] == [str(tmp_path / "two" / "kata-containers-initrd.img")]

    one, two = tmp_path / "one", tmp_path / "two"
    assert sorted(os.listdir(one)) == ["kata-containers-initrd.img", "manifest.json"]
    initrd = (one / "kata-containers-initrd.img").read_bytes()
    assert initrd == (two / "kata-containers-initrd.img").read_bytes(), "two builds differ"
    assert initrd[:2] == b"\x1f\x8b"

    manifest = json.loads((one / "manifest.json").read_text())
    assert manifest["init_mode"] == "agent" and manifest["cgroup_driver"] == "cgroupfs"
    assert manifest["source_date_epoch"] == int(EPOCH)
    assert manifest["config"]["distro"] == "debian" and manifest["config"]["formats"] == ["initrd"]
    (artifact,) = manifest["artifacts"]
    assert artifact["file"] == "kata-containers-initrd.img" and artifact["compression"] == "gzip"
    assert artifact["size"] == len(initrd) and artifact["sha256"] == hashlib.sha256(initrd).hexdigest()
    assert sorted(os.listdir(tmp_path)) == ["one", "two"], "staging was left behind"
