"""With no epoch given, a build installed from a recipe takes the newest time its
repositories' indexes record: the Date: of Debian's InRelease (Debian's own mirror), the
newest package of an APKINDEX and the newest repomd.xml timestamp (local signed
repositories: Alpine's and RPM mirrors are out of reach). Two builds of the same inputs into
two directories give the same bytes and the same manifest, with no flag."""

from __future__ import annotations

import email.utils
import hashlib
import json
import re
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.local_repos.apk import served_alpine_repo
from tests.local_repos.rpm import repo_paths, served_rpm_mirror

pytestmark = pytest.mark.slow
DEBIAN_INRELEASE = "http://deb.debian.org/debian/dists/bookworm/InRelease"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_twice(tmp_path: Path, *args: str) -> dict:
    """The same build into two directories: same artifact bytes, same manifest; its manifest."""
    outs = [tmp_path / "one", tmp_path / "two"]
    for out in outs:
        result = run_cli("build", *args, "--format", "initrd", "-o", out)
        assert result.returncode == 0, result.stderr
        assert "source date epoch" in result.stderr and "from the package index's date" in result.stderr
    assert sha256(outs[0] / "kata-containers-initrd.img") == sha256(outs[1] / "kata-containers-initrd.img")
    assert (outs[0] / "manifest.json").read_bytes() == (outs[1] / "manifest.json").read_bytes()
    return json.loads((outs[0] / "manifest.json").read_text())


def test_a_debian_build_takes_the_date_of_debian_s_inrelease(cache_dir, tmp_path):
    with urllib.request.urlopen(DEBIAN_INRELEASE, timeout=60) as response:
        date = re.search(r"^Date: (.+)$", response.read().decode(errors="replace"), re.M)[1]
    expected = int(email.utils.parsedate_to_datetime(date).timestamp())
    manifest = build_twice(tmp_path, "--distro", "debian", "--init", "agent", "--probe-agent",
                           "--cache-dir", cache_dir)
    assert manifest["source_date_epoch"] == expected


def test_an_alpine_build_takes_its_newest_package_s_build_time(cache_dir, tmp_path):
    with served_alpine_repo(tmp_path / "apk", cache_dir) as (_, url, key):
        manifest = build_twice(tmp_path, "--distro", "alpine", "--init", "agent", "--probe-agent", "--mirror", url,
                               "--keyring", key, "--no-cache")
    assert manifest["source_date_epoch"] == 1700000000  # every test package's t: field


def test_a_dnf_build_takes_its_repositories_newest_metadata_time(tmp_path):
    with served_rpm_mirror(tmp_path / "rpm", ("centos",)) as (url, key, _):
        root = tmp_path / "rpm" / "mirror"
        stamps = [int(s) for path in repo_paths("centos", "x86_64")
                  for s in re.findall(r"<timestamp>(\d+)</timestamp>", (root / path / "repodata/repomd.xml").read_text())]
        manifest = build_twice(tmp_path, "--distro", "centos", "--init", "agent", "--probe-agent", "--mirror", url,
                               "--keyring", key, "--no-cache")
    assert manifest["source_date_epoch"] == max(stamps)
