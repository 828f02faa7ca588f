"""`build --layout kata`: Kata's release tree, tarballs and SHA256SUMS from a real Debian guest,
reproducible, checked against the fragment it writes, and booted through its link."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.helpers import validate_manifest

pytestmark = pytest.mark.slow
EPOCH = "1700000000"
SHARE = "opt/kata/share/kata-containers"


def build(out: Path, cache_dir: Path, agent: list[str], *extra: str):
    result = run_cli("build", "--distro", "debian", "--init", "agent", *agent, "--cache-dir", cache_dir,
                     "--format", "initrd,image", "--layout", "kata", "-o", out, *extra, env={"SOURCE_DATE_EPOCH": EPOCH})
    assert result.returncode == 0, result.stderr
    return result


def test_the_release_layout_is_reproducible_and_checks_out(cache_dir, agent_x86_64, tmp_path):
    digests = []
    for name in ("one", "two"):
        out = tmp_path / name
        build(out, cache_dir, ["--agent", str(agent_x86_64)], "--tarball", "--variant", "confidential", "--verity",
              "--install-path", str(out / SHARE))
        share = out / SHARE
        assert sorted(os.listdir(share)) == ["kata-containers-confidential.img",
                                             "kata-containers-initrd-confidential.img",
                                             "kata-debian-bookworm-confidential.image",
                                             "kata-debian-bookworm-confidential.initrd", "root_hash_confidential.txt"]
        assert sorted(os.listdir(out)) == ["SHA256SUMS", "kata-runtime.toml", "kata-static-rootfs-image-confidential.tar.zst",
                                           "kata-static-rootfs-initrd-confidential.tar.zst", "manifest.json", "opt",
                                           "packages.lock"]
        assert subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=out).returncode == 0
        manifest = validate_manifest(out / "manifest.json")
        assert [a["file"] for a in manifest["artifacts"]] == [f"{SHARE}/kata-debian-bookworm-confidential.initrd",
                                                              f"{SHARE}/kata-debian-bookworm-confidential.image"]
        listing = subprocess.run(["tar", "--zstd", "-tvf", str(out / "kata-static-rootfs-image-confidential.tar.zst"),
                                  "--numeric-owner"], capture_output=True, text=True, check=True).stdout
        assert all(" 0/0 " in line for line in listing.splitlines())
        assert f"./{SHARE}/root_hash_confidential.txt" in listing
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                        for p in out.glob("kata-static-rootfs-*.tar.zst")})
        checked = run_cli("check", "--runtime-config", out / "kata-runtime.toml", "--json")
        assert checked.returncode == 0, checked.stdout
        assert json.loads(checked.stdout)["checked"][0]["artifact"] == str(share / "kata-containers-confidential.img")
    assert digests[0] == digests[1], "two builds gave different release tarballs"


def test_a_probe_release_boots_through_its_link(cache_dir, tmp_path):
    out = tmp_path / "release"
    build(out, cache_dir, ["--probe-agent"])
    link = out / SHARE / "kata-containers-initrd.img"
    assert os.readlink(link) == "kata-debian-bookworm.initrd"
    booted = run_cli("boot", link, "--kernel", "debian", "--cache-dir", cache_dir / "boot", "--accel", "tcg", "--json",
                     "--timeout", "120")
    assert booted.returncode == 0, booted.stderr
    assert json.loads(booted.stdout)["probe"]["init_mode"] is True
