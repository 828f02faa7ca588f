"""Disk images and ISOs of real Debian trees, read back without mounting, and `build`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from osbuilder.pack.disk import MiB
from tests.conftest import run_cli
from tests.helpers import (assert_erofs_matches, assert_ext4_matches, fsck_and_rdump_ext4, partition_bytes, snapshot,
                           validate_manifest)

pytestmark = pytest.mark.slow
EPOCH = "1700000000"


def test_ext4_dax_image_of_the_systemd_tree(rootfs, agent_x86_64, tmp_path):
    tree = rootfs.get("systemd", "x86_64", agent_x86_64)
    before = snapshot(tree)
    image = tmp_path / "kata.img"
    result = run_cli("image", tree, "-o", image)
    assert result.returncode == 0, result.stderr
    assert snapshot(tree) == before
    fs, out = fsck_and_rdump_ext4(image, 3 * MiB, tmp_path)
    assert_ext4_matches(fs, out, before)
    assert any(v[1] & 0o4000 for v in before.values()), "expected setuid binaries in a Debian tree"


def test_erofs_image_of_the_agent_tree(rootfs, agent_x86_64, tmp_path):
    tree = rootfs.get("agent", "x86_64", agent_x86_64)
    before = snapshot(tree)
    image = tmp_path / "kata.img"
    result = run_cli("image", tree, "--fs", "erofs", "--no-dax", "-o", image)
    assert result.returncode == 0, result.stderr
    assert snapshot(tree) == before and not (tree / "etc/machine-id").exists()
    out = tmp_path / "x"
    fs = partition_bytes(image, tmp_path / "fs", MiB)
    subprocess.run(["fsck.erofs", f"--extract={out}", str(fs)], check=True, capture_output=True)
    assert_erofs_matches(fs, out, before)
    assert (out / "etc/machine-id").stat().st_size == 0


def test_build_writes_every_format_and_the_manifest(cache_dir, agent_x86_64, tmp_path):
    out = tmp_path / "out"
    result = run_cli("build", "--distro", "debian", "--init", "systemd", "--agent", agent_x86_64,
                     "--cache-dir", cache_dir, "--format", "initrd,image,iso", "--verity", "-o", out,
                     "--sbom", "cyclonedx", "--install-path", out, env={"SOURCE_DATE_EPOCH": EPOCH})
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == ["kata-containers-initrd.img", "kata-containers.img", "kata-containers.iso",
                                       "kata-runtime.toml", "manifest.json", "packages.lock", "root_hash_base.txt",
                                       "sbom.cdx.json"]
    manifest = validate_manifest(out / "manifest.json")
    assert len(manifest["packages"]) > 50 and "systemd" in {p["name"] for p in manifest["packages"]}
    bom = (out / "sbom.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(bom) is None
    hashes = {c["name"]: c["hashes"][0]["content"] for c in json.loads(bom)["components"] if c["type"] == "file"}
    assert hashes == {a["file"]: a["sha256"] for a in manifest["artifacts"]}
    # The runtime configuration fragment build wrote passes check, on the real tree.
    checked = run_cli("check", "--runtime-config", out / "kata-runtime.toml", "--host-cgroup-driver", "systemd",
                      "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["checked"][0]["artifact"] == str(out / "kata-containers.img")
    inspected = json.loads(run_cli("inspect", out / "kata-containers.img", "--json").stdout)
    assert inspected["packages"]["count"] == len(manifest["packages"]) and inspected["agent"]["verified"] is True
    by_format = {a["format"]: a for a in manifest["artifacts"]}
    for artifact in manifest["artifacts"]:
        data = (out / artifact["file"]).read_bytes()
        assert artifact["size"] == len(data) and artifact["sha256"] == hashlib.sha256(data).hexdigest()
    assert by_format["image"]["fs"] == "ext4" and by_format["image"]["dax"] is True
    assert (out / "root_hash_base.txt").read_text().strip() == by_format["image"]["verity"]["kernel_params"]
    assert manifest["config"]["verity"] is True and manifest["cgroup_driver"] == "host"
    assert sorted(os.listdir(tmp_path)) == ["out"]


@pytest.mark.parametrize("fs", ["ext4", "xfs", "erofs"])
def test_build_twice_gives_identical_images(agent_x86_64, tmp_path, fs):
    """A fresh bootstrap (mmdebstrap's tree as written) and one unpacked from the cache pack
    to the same bytes."""
    digests = []
    for name in ("one", "two"):
        result = run_cli("build", "--distro", "debian", "--init", "agent", "--agent", agent_x86_64,
                         "--cache-dir", tmp_path / "cache", "--format", "image,iso", "--fs", fs,
                         "-o", tmp_path / name, env={"SOURCE_DATE_EPOCH": EPOCH})
        assert result.returncode == 0, result.stderr
        assert ("using cached bootstrap" in result.stderr) == (name == "two")
        digests.append([hashlib.sha256((tmp_path / name / f).read_bytes()).hexdigest()
                        for f in ("kata-containers.img", "kata-containers.iso")])
    assert digests[0] == digests[1]
