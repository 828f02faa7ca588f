"""packages.lock and --lock, round trip: a build writes the lock; a rebuild from it, with the
cache empty, installs exactly those versions and gives the same bytes; a version the mirror no
longer has is refused with exit 2, naming it, before anything is written. Debian from its own
mirror; dnf and apk from local signed repositories (their mirrors are out of reach)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.local_repos.apk import served_alpine_repo
from tests.local_repos.rpm import served_rpm_mirror

pytestmark = pytest.mark.slow


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def round_trip(tmp_path: Path, cache: Path, *args: str) -> dict:
    """Build (with `cache`, perhaps warm), rebuild from the lock with an empty cache, compare;
    then a lock naming a version that is gone. Returns the lock."""
    first = tmp_path / "first"
    built = run_cli("build", *args, "--format", "initrd", "--cache-dir", cache, "-o", first)
    assert built.returncode == 0, built.stderr
    lock_file = first / "packages.lock"
    lock = json.loads(lock_file.read_text())
    manifest = json.loads((first / "manifest.json").read_text())
    assert [(p["name"], p["version"], p["architecture"]) for p in lock["packages"]] == \
        [(p["name"], p["version"], p["architecture"]) for p in manifest["packages"]]
    assert lock["source_date_epoch"] == manifest["source_date_epoch"]
    assert {"file": "packages.lock", "kind": "packages-lock", "sha256": sha256(lock_file)} in manifest["sidecars"]
    again = tmp_path / "again"
    rebuilt = run_cli("build", *args, "--lock", lock_file, "--format", "initrd", "--cache-dir", tmp_path / "cache-2",
                      "-o", again)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert sha256(again / "kata-containers-initrd.img") == sha256(first / "kata-containers-initrd.img")
    assert (again / "packages.lock").read_bytes() == lock_file.read_bytes()
    # The mirror no longer has one of the versions.
    gone = dict(lock, packages=[dict(p, version="0.0.1-gone") if p["name"] == lock["packages"][0]["name"] else p
                                for p in lock["packages"]])
    stale = tmp_path / "stale.lock"
    stale.write_text(json.dumps(gone))
    refused = run_cli("build", *args, "--lock", stale, "--format", "initrd", "--cache-dir", tmp_path / "cache-3",
                      "-o", tmp_path / "refused")
    assert refused.returncode == 2, refused.stderr
    assert f"the mirror no longer has {lock['packages'][0]['name']}" in refused.stderr
    assert "snapshot" in refused.stderr and not (tmp_path / "refused").exists()
    return lock


def test_a_debian_build_rebuilds_from_its_lock(cache_dir, tmp_path):
    lock = round_trip(tmp_path, cache_dir, "--distro", "debian", "--init", "agent", "--probe-agent")
    assert (lock["distro"], lock["release"], lock["arch"], lock["backend"]) == ("debian", "bookworm", "x86_64", "apt")
    assert lock["mirror"] == "http://deb.debian.org/debian" and len(lock["recipe_sha256"]) == 64
    assert any(p["name"] == "libc6" for p in lock["packages"])


def test_a_dnf_build_rebuilds_from_its_lock(tmp_path):
    with served_rpm_mirror(tmp_path / "rpm", ("centos",)) as (url, key, _):
        lock = round_trip(tmp_path, tmp_path / "cache-1", "--distro", "centos", "--init", "agent", "--probe-agent", "--mirror", url,
                          "--keyring", key)
    assert lock["backend"] == "dnf" and {"name": "chrony", "version": "1.0-1.osbuildertest",
                                         "architecture": "x86_64"} in lock["packages"]


def test_an_alpine_build_rebuilds_from_its_lock(cache_dir, tmp_path):
    with served_alpine_repo(tmp_path / "apk", cache_dir) as (_, url, key):
        lock = round_trip(tmp_path, tmp_path / "cache-1", "--distro", "alpine", "--init", "agent", "--probe-agent", "--mirror", url,
                          "--keyring", key)
    assert lock["backend"] == "apk" and any(p["name"] == "busybox" for p in lock["packages"])


def test_a_lock_is_refused_where_it_cannot_apply(tmp_path):
    lock = tmp_path / "packages.lock"
    lock.write_text(json.dumps({"lock_version": 1, "distro": "debian", "release": "bookworm", "arch": "x86_64",
                                "backend": "apt", "mirror": "http://deb.debian.org/debian", "recipe_sha256": "0" * 64,
                                "source_date_epoch": 1, "packages": [{"name": "bash", "version": "5.2",
                                                                      "architecture": "amd64"}]}))
    for extra, words in ((("--distro", "ubuntu"), "is for distro debian, not ubuntu"),
                         (("--distro", "debian", "--release", "trixie"), "is for release bookworm, not trixie"),
                         (("--distro", "debian", "--extra-packages", "curl"), "the lock names every package"),
                         (("--distro", "debian", "--existing", tmp_path), "applies to a tree installed from a recipe")):
        result = run_cli("build", *extra, "--init", "agent", "--probe-agent", "--lock", lock, "-o", tmp_path / "o")
        assert result.returncode == 2 and words in result.stderr, result.stderr
    lock.write_text('{"lock_version": 1, "distro": "debian"}')
    result = run_cli("build", "--distro", "debian", "--init", "agent", "--probe-agent", "--lock", lock,
                     "-o", tmp_path / "o")
    assert result.returncode == 2 and "is missing or not what a packages.lock holds" in result.stderr
    assert not (tmp_path / "o").exists()
