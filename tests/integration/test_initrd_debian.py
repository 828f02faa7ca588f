"""initrds of real Debian trees, and `osbuilder build --format initrd`, reproducibly."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from tests.conftest import run_cli
from tests.helpers import snapshot, validate_manifest

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
    common += ["--sbom", "spdx"]
    cached = run_cli(*common, "--cache-dir", cache_dir, "-o", tmp_path / "one", env=env)
    assert cached.returncode == 0, cached.stderr
    fresh = run_cli(*common, "-o", tmp_path / "two", "--json", env=env)  # bootstraps afresh from the mirror
    assert fresh.returncode == 0, fresh.stderr
    report = json.loads(fresh.stdout)
    assert report["init_mode"] == "agent" and report["manifest"] == str(tmp_path / "two" / "manifest.json")
    assert [a["path"] for a in report["artifacts"]] == [str(tmp_path / "two" / "kata-containers-initrd.img")]

    one, two = tmp_path / "one", tmp_path / "two"
    assert sorted(os.listdir(one)) == ["kata-containers-initrd.img", "kata-runtime.toml", "manifest.json", "packages.lock",
                                       "sbom.spdx.json"]
    for name in sorted(set(os.listdir(one)) - {"manifest.json"}):  # it records --cache-dir and -o
        # The fresh bootstrap and the cached one give the same bytes, SBOM included.
        assert (one / name).read_bytes() == (two / name).read_bytes(), f"two builds differ in {name}"
    initrd = (one / "kata-containers-initrd.img").read_bytes()
    assert initrd[:2] == b"\x1f\x8b"

    manifest = validate_manifest(one / "manifest.json")
    names = [p["name"] for p in manifest["packages"]]
    assert {"dbus", "chrony", "libc6", "libseccomp2"} <= set(names) and names == sorted(names)
    assert all(p["architecture"] in ("amd64", "all") for p in manifest["packages"])
    assert [s["file"] for s in manifest["sidecars"]] == ["packages.lock", "kata-runtime.toml", "sbom.spdx.json"]
    spdx = parse_file(str(one / "sbom.spdx.json"))
    assert validate_full_spdx_document(spdx) == []
    assert len([p for p in spdx.packages if p.external_references]) == len(names)
    assert manifest["init_mode"] == "agent" and manifest["cgroup_driver"] == "cgroupfs"
    assert manifest["source_date_epoch"] == int(EPOCH)
    assert manifest["config"]["distro"] == "debian" and manifest["config"]["formats"] == ["initrd"]
    (artifact,) = manifest["artifacts"]
    assert artifact["file"] == "kata-containers-initrd.img" and artifact["compression"] == "gzip"
    assert artifact["size"] == len(initrd) and artifact["sha256"] == hashlib.sha256(initrd).hexdigest()
    assert sorted(os.listdir(tmp_path)) == ["one", "two"], "staging was left behind"
