"""The build cache with real package managers: a base tree reused when only the agent
changes, downloads reused after the tree's entry is gone, a damaged entry rebuilt, and
concurrent builds that bootstrap once.

Debian installs with mmdebstrap from a local signed copy of Debian's packages (so the test
can take packages away from the mirror); Alpine with osbuilder's apk installer from a
repository the tests write (Alpine's mirror is out of reach)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from osbuilder.foundation.cache import metadata_digest
from osbuilder.rootfs.recipes import load_recipe
from tests.conftest import run_cli
from tests.local_repos import GpgKey, serve_directory
from tests.local_repos.apk import served_alpine_repo
from tests.local_repos.apt import build_apt_repo, collect_debs

CACHED = "using cached bootstrap"


def entries(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "bootstrap").iterdir() if not p.name.startswith("."))


@pytest.fixture(scope="module")
def apk_repo(tmp_path_factory, cache_dir):
    with served_alpine_repo(tmp_path_factory.mktemp("apk-cache"), cache_dir) as repo:
        yield repo


def alpine(out: Path, url: str, keyring: Path, cache: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "osbuilder", "rootfs", "--distro", "alpine", "--init", "agent",
                             "--mirror", url, "--keyring", str(keyring), "--cache-dir", str(cache), "-o", str(out),
                             *(extra or ("--probe-agent",))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return err


def test_concurrent_builds_bootstrap_once_and_share_the_entry(apk_repo, tmp_path):
    _, url, keyring = apk_repo
    cache = tmp_path / "cache"
    builds = [alpine(tmp_path / f"tree{i}", url, keyring, cache) for i in range(3)]
    logs = [finish(proc) for proc in builds]
    assert sum(CACHED not in log for log in logs) == 1, logs
    assert len(entries(cache)) == 1
    assert not list((cache / "bootstrap").glob(".*.partial"))
    listings = [sorted(str(p.relative_to(tmp_path / f"tree{i}")) for p in (tmp_path / f"tree{i}").rglob("*"))
                for i in range(3)]
    assert listings[0] == listings[1] == listings[2]


def test_a_damaged_entry_is_rebuilt(apk_repo, tmp_path):
    _, url, keyring = apk_repo
    cache = tmp_path / "cache"
    finish(alpine(tmp_path / "one", url, keyring, cache))
    (name,) = entries(cache)
    tarball = cache / "bootstrap" / name / "tree.tar"
    data = bytearray(tarball.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tarball.write_bytes(bytes(data))
    log = finish(alpine(tmp_path / "two", url, keyring, cache))
    assert "is damaged" in log and CACHED not in log
    assert entries(cache) == [name]
    log = finish(alpine(tmp_path / "three", url, keyring, cache))
    assert CACHED in log  # the rebuilt entry is whole again


def test_apk_downloads_are_reused_when_the_mirror_no_longer_has_them(apk_repo, tmp_path):
    mirror, url, keyring = apk_repo
    cache = tmp_path / "cache"
    finish(alpine(tmp_path / "one", url, keyring, cache))
    kept = sorted(p.name for p in (cache / "packages" / "apk" / "alpine-3.22-x86_64").glob("*.apk"))
    assert "busybox-1.37.0-r19.apk" in kept and len(kept) == 12
    shutil.rmtree(cache / "bootstrap")
    packages = mirror / "v3.22/main/x86_64"
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    for apk in packages.glob("*.apk"):
        shutil.move(apk, hidden / apk.name)
    try:
        log = finish(alpine(tmp_path / "two", url, keyring, cache))
        assert CACHED not in log  # bootstrapped again, from the kept packages
        without = subprocess.run([sys.executable, "-m", "osbuilder", "rootfs", "--distro", "alpine", "--init",
                                  "agent", "--probe-agent", "--mirror", url, "--keyring", str(keyring), "--no-cache",
                                  "-o", str(tmp_path / "three")], capture_output=True, text=True)
        assert without.returncode != 0 and "404" in without.stderr  # the mirror really lacks them
    finally:
        for apk in hidden.iterdir():
            shutil.move(apk, packages / apk.name)


def test_no_cache_leaves_the_default_cache_untouched(apk_repo, tmp_path, private_default_cache):
    _, url, keyring = apk_repo
    result = run_cli("rootfs", "--distro", "alpine", "--init", "agent", "--probe-agent", "--mirror", url,
                     "--keyring", keyring, "--no-cache", "-o", tmp_path / "tree")
    assert result.returncode == 0, result.stderr
    assert not (private_default_cache / "osbuilder").exists()
    result = run_cli("rootfs", "--distro", "alpine", "--init", "agent", "--probe-agent", "--mirror", url,
                     "--keyring", keyring, "-o", tmp_path / "tree2")
    assert result.returncode == 0, result.stderr
    assert len(entries(private_default_cache / "osbuilder")) == 1  # the default: $XDG_CACHE_HOME/osbuilder
    both = run_cli("rootfs", "--distro", "alpine", "--init", "agent", "--probe-agent", "--no-cache",
                   "--cache-dir", tmp_path / "c", "-o", tmp_path / "tree3")
    assert both.returncode == 2 and both.error_lines == [
        "osbuilder: error: --cache-dir and --no-cache exclude each other; pass one of them"]


@pytest.fixture(scope="module")
def debian_repo(tmp_path_factory, cache_dir):
    recipe = load_recipe("debian")
    debs = collect_debs(recipe.packages_for("x86_64", "agent", True), "amd64", cache_dir)
    work = tmp_path_factory.mktemp("debian-cache")
    key = GpgKey.create(work / "gnupg", "osbuilder test archive")
    release = recipe.default_release
    repo = build_apt_repo(work / "repo", debs, release, "main", "amd64", key,
                          more_suites=(f"{release}-updates", f"{release}-security"))
    with serve_directory(repo) as url:
        yield repo, url, key.export(work / "keyring.gpg")


@pytest.mark.slow
def test_debian_rebuild_reuses_the_tree_and_the_downloaded_packages(debian_repo, agent_x86_64, tmp_path):
    repo, url, keyring = debian_repo
    cache = tmp_path / "cache"

    def build(name: str, agent: list, epoch: str = "1700000000"):
        caching = agent if "--no-cache" in agent else [*agent, "--cache-dir", cache]
        result = run_cli("build", "--distro", "debian", "--init", "agent", *caching, "--mirror", url,
                         "--security-mirror", url, "--keyring", keyring, "--format", "initrd,image", "-o", tmp_path / name,
                         "--json", env={"SOURCE_DATE_EPOCH": epoch})
        assert result.returncode == 0, result.stderr
        return result

    cold = build("cold", ["--agent", agent_x86_64])
    assert CACHED not in cold.stderr
    debs = sorted((cache / "packages" / "apt" / "debian-bookworm-x86_64").glob("*.deb"))
    assert len(debs) > 80 and any(d.name.startswith("chrony_") for d in debs)
    (entry,) = entries(cache)
    inputs = json.loads((cache / "bootstrap" / entry / "entry.json").read_text())["inputs"]
    assert inputs["release"] == "bookworm" and inputs["tool"].startswith("mmdebstrap ")
    assert inputs["mirror"] == url and inputs["source_date_epoch"] == 1700000000

    kept = cache / "bootstrap" / entry / "tree"
    assert (kept.parent / "tree.metadata").read_text().strip() == metadata_digest(kept)

    # Only the agent changes: the tree is a hard-linked clone of the cache's copy, the initrd
    # reuses the compressed pieces that do not hold the agent, the artifacts carry the new agent.
    warm = build("warm", ["--probe-agent"])
    assert f"{CACHED} {kept.parent} (linked)" in warm.stderr
    reused, total = map(int, re.search(r"initrd: (\d+) of (\d+) compressed pieces reused", warm.stderr).groups())
    assert total - 4 <= reused < total
    digests = [{a["format"]: a["sha256"] for a in json.loads(r.stdout)["artifacts"]} for r in (cold, warm)]
    assert digests[0]["initrd"] != digests[1]["initrd"]
    # Provisioning and packing the clone left the cache's copy as it was kept.
    assert (kept.parent / "tree.metadata").read_text().strip() == metadata_digest(kept)

    # A copy changed behind the cache's back is noticed: the tarball is used, the copy kept
    # again, and the artifacts are the same.
    with open(next(kept.glob("etc/os-release")).resolve(), "a") as f:
        f.write("CHANGED=1\n")
    again = build("again", ["--probe-agent"])
    assert "changed since it was kept" in again.stderr and f"{CACHED} {kept.parent}\n" in again.stderr
    assert (kept.parent / "tree.metadata").read_text().strip() == metadata_digest(kept)
    # ...and no cache at all gives the same bytes as the linked clone and the reused pieces.
    fresh = build("fresh", ["--probe-agent", "--no-cache"])
    for result in (again, fresh):
        assert {a["format"]: a["sha256"] for a in json.loads(result.stdout)["artifacts"]} == digests[1]

    # An input of the key changes: a new entry, bootstrapped with the kept packages although
    # the mirror no longer has them (only its signed indices).
    pool = repo / "pool"
    shutil.move(pool, tmp_path / "pool")
    try:
        later = build("later", ["--agent", agent_x86_64], epoch="1700000001")
        assert CACHED not in later.stderr
    finally:
        shutil.move(tmp_path / "pool", pool)
    assert len(entries(cache)) == 2
