"""Security updates in guests, the whole path on this machine: a signed Debian archive on
127.0.0.1 serving bookworm (Debian's packages), bookworm-updates and bookworm-security (empty at
first), mmdebstrap installing from all three, `inspect --updates` and `check --updates` reading
the suites' current indexes, and the rebuild that notices a moved security suite.

The security suite's "fix" is one of the guest's packages rebuilt with a version that sorts
after the original's, as a Debian security upload's +debNuM does, and signed into the suite."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from osbuilder.rootfs.recipes import load_recipe
from tests.conftest import run_cli
from tests.local_repos import GpgKey, serve_directory
from tests.local_repos.apt import build_apt_repo, collect_debs, newer_deb, publish_suite

pytestmark = pytest.mark.slow

FIXED = "libseccomp2"  # the package the security suite gets a newer version of
SUFFIX = "+deb12u99"
INITRD = "kata-containers-initrd.img"
CACHED = "using cached bootstrap"


@dataclass
class Archive:
    root: Path
    url: str
    key: GpgKey
    keyring: Path
    debs: Path

    def add_security_fix(self, work: Path, suffix: str = SUFFIX) -> str:
        """FIXED, newer, into bookworm-security; returns its version."""
        (original,) = self.debs.glob(f"{FIXED}_*.deb")
        work.mkdir(parents=True, exist_ok=True)
        built = newer_deb(original, suffix, work)
        (self.root / "pool" / "bookworm-security" / built.name).hardlink_to(built)
        publish_suite(self.root, "bookworm-security", "main", "amd64", self.key, "pool/bookworm-security")
        return built.name.split("_")[1]

    def withdraw_security_fixes(self) -> None:
        for deb in (self.root / "pool" / "bookworm-security").iterdir():
            deb.unlink()
        publish_suite(self.root, "bookworm-security", "main", "amd64", self.key, "pool/bookworm-security")


@pytest.fixture
def archive(tmp_path_factory, cache_dir):
    recipe = load_recipe("debian")
    debs = collect_debs(recipe.packages_for("x86_64", "agent", True), "amd64", cache_dir)
    work = tmp_path_factory.mktemp("updates-archive")
    key = GpgKey.create(work / "gnupg", "osbuilder test archive")
    root = build_apt_repo(work / "repo", debs, "bookworm", "main", "amd64", key,
                          more_suites=("bookworm-updates", "bookworm-security"))
    with serve_directory(root) as url:
        yield Archive(root, url, key, key.export(work / "keyring.gpg"), debs)


def build(archive: Archive, out: Path, agent: Path, *extra: str, cache: Path | None = None):
    caching = ("--cache-dir", cache) if cache is not None else ("--no-cache",)
    # The one archive serves the release's suites and the security suite.
    return run_cli("build", "--distro", "debian", "--init", "agent", "--agent", agent, "--mirror", archive.url,
                   "--security-mirror", archive.url, "--keyring", archive.keyring, "--format", "initrd",
                   *caching, "-o", out, *extra)


def installed_version(out: Path, name: str) -> str:
    manifest = json.loads((out / "manifest.json").read_text())
    return next(p["version"] for p in manifest["packages"] if p["name"] == name)


def inspect_updates(artifact: Path, *extra: str) -> dict:
    result = run_cli("--json", "inspect", artifact, "--updates", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def codes(findings: list[dict]) -> set[str]:
    return {f["code"] for f in findings}


def check_updates(artifact: Path, fail_on: str):
    return run_cli("--json", "check", artifact, "--updates", "--host-cgroup-driver", "cgroupfs",
                   "--fail-on", fail_on)


def test_a_moved_security_suite_is_reported_and_a_rebuild_takes_it(archive, agent_x86_64, tmp_path):
    cache = tmp_path / "cache"
    first = tmp_path / "first"
    result = build(archive, first, agent_x86_64, cache=cache)
    assert result.returncode == 0, result.stderr
    original = installed_version(first, FIXED)

    # Every record names the three suites it installed from.
    expected = [{"name": "bookworm", "url": archive.url, "kind": "release"},
                {"name": "bookworm-updates", "url": archive.url, "kind": "updates"},
                {"name": "bookworm-security", "url": archive.url, "kind": "security"}]
    assert json.loads((first / "manifest.json").read_text())["sources"] == expected
    assert json.loads((first / "packages.lock").read_text())["sources"] == expected
    report = inspect_updates(first / INITRD)
    assert report["updates"]["checked"] and report["updates"]["pending"] == []
    assert report["updates"]["sources"] == expected
    assert not codes(report["findings"]) & {"security-updates-available", "updates-available"}

    fixed = archive.add_security_fix(tmp_path)
    report = inspect_updates(first / INITRD)
    assert report["updates"]["pending"] == [{"name": FIXED, "installed": original, "available": fixed,
                                             "architecture": "amd64", "suite": "bookworm-security",
                                             "kind": "security", "url": archive.url}]
    (finding,) = [f for f in report["findings"] if f["code"] == "security-updates-available"]
    assert finding["severity"] == "warning"
    assert f"{FIXED} {original} -> {fixed} (bookworm-security)" in finding["message"]
    # The release gate: a warning fails --fail-on warning, not the default.
    gate = check_updates(first / INITRD, "warning")
    assert gate.returncode == 1, gate.stderr
    assert "security-updates-available" in codes(json.loads(gate.stdout)["findings"])
    assert check_updates(first / INITRD, "error").returncode == 0

    # The warm rebuild sees the security suite moved and installs afresh, saying why; the
    # entry it supersedes goes.
    second = tmp_path / "second"
    result = build(archive, second, agent_x86_64, cache=cache)
    assert result.returncode == 0, result.stderr
    assert CACHED not in result.stderr
    assert "bootstrapping afresh: bookworm-security changed since the cached bootstrap" in result.stderr
    assert len(list((cache / "bootstrap").iterdir())) == 1
    assert installed_version(second, FIXED) == fixed
    report = inspect_updates(second / INITRD)
    assert report["updates"]["pending"] == []
    assert "security-updates-available" not in codes(report["findings"])
    assert check_updates(second / INITRD, "warning").returncode == 0
    # Unchanged indexes: the next build reuses the entry.
    third = build(archive, tmp_path / "third", agent_x86_64, cache=cache)
    assert third.returncode == 0 and CACHED in third.stderr, third.stderr

    # With --lock the lock wins: the first build's version again, whatever the suites hold now,
    # and the suites moving again does not empty the locked build's cache entry.
    locked = tmp_path / "locked"
    result = build(archive, locked, agent_x86_64, "--lock", first / "packages.lock", cache=cache)
    assert result.returncode == 0, result.stderr
    assert installed_version(locked, FIXED) == original
    archive.withdraw_security_fixes()
    archive.add_security_fix(tmp_path / "again", "+deb12u100")
    result = build(archive, tmp_path / "locked-again", agent_x86_64, "--lock", first / "packages.lock", cache=cache)
    assert result.returncode == 0, result.stderr
    assert CACHED in result.stderr and "bootstrapping afresh" not in result.stderr


def test_no_updates_installs_the_release_alone_and_says_what_it_misses(archive, agent_x86_64, tmp_path):
    fixed = archive.add_security_fix(tmp_path)
    out = tmp_path / "out"
    result = build(archive, out, agent_x86_64, "--no-updates")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "manifest.json").read_text())["sources"] == [
        {"name": "bookworm", "url": archive.url, "kind": "release"}]
    assert installed_version(out, FIXED) != fixed
    # The comparison takes the release's update and security suites whatever the guest was
    # built with; this guest records no security archive, so it is named (else: the recipe's).
    report = inspect_updates(out / INITRD, "--security-mirror", archive.url)
    assert [p["available"] for p in report["updates"]["pending"]] == [fixed]
    (finding,) = [f for f in report["findings"] if f["code"] == "security-updates-available"]
    assert "without --no-updates" in finding["fix"]


def test_a_security_suite_the_mirror_lacks_is_named_and_nothing_is_left(archive, agent_x86_64, tmp_path):
    out = tmp_path / "out"
    result = run_cli("build", "--distro", "debian", "--init", "agent", "--agent", agent_x86_64, "--mirror",
                     archive.url, "--security-mirror", f"{archive.url}/nowhere", "--keyring", archive.keyring,
                     "--format", "initrd", "--no-cache", "-o", out)
    assert result.returncode == 2, result.stderr
    assert result.error_lines[-1] == (
        f"osbuilder: error: the security suite bookworm-security is not at {archive.url}/nowhere "
        f"({archive.url}/nowhere/dists/bookworm-security has no InRelease or Release); pass --security-mirror a "
        "mirror that serves it, or --no-updates to install from bookworm alone")
    assert "mmdebstrap" not in result.stderr  # refused when the indexes are read, before installing
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_fedora_installs_from_its_updates_repository_and_reports_a_newer_package(tmp_path, host_agent):
    """dnf: the updates repository (empty at first) beside the release's; an update that lands
    there is reported (updates-available: Fedora's repositories do not split security fixes off)
    and a rebuild installs it."""
    import dataclasses

    from tests.local_repos.rpm import STAND_INS, build_rpm_repo, build_rpms, repo_paths, served_rpm_mirror

    with served_rpm_mirror(tmp_path / "rpm", ("fedora",)) as (url, key_file, _):
        def build(out: Path):
            result = run_cli("build", "--distro", "fedora", "--init", "agent", "--agent", host_agent, "--mirror", url,
                             "--keyring", key_file, "--format", "initrd", "--cache-dir", tmp_path / "cache", "-o", out)
            assert result.returncode == 0, result.stderr
            return result

        build(tmp_path / "first")
        sources = json.loads((tmp_path / "first" / "manifest.json").read_text())["sources"]
        assert [(s["url"], s["kind"]) for s in sources] == [
            (f"{url}/releases/44/Everything/$basearch/os/", "release"),
            (f"{url}/updates/44/Everything/$basearch/", "updates")]
        assert inspect_updates(tmp_path / "first" / INITRD)["updates"]["pending"] == []

        from tests.local_repos import GpgKey
        key = GpgKey(tmp_path / "rpm" / "gnupg", "osbuilder test rpm signing")
        chrony = next(s for s in STAND_INS if s.name == "chrony")
        built = build_rpms(tmp_path / "update", "x86_64", key, (dataclasses.replace(chrony, release="2.osbuildertest"),))
        build_rpm_repo(tmp_path / "rpm" / "mirror" / repo_paths("fedora", "x86_64")[-1], sorted(built.iterdir()), key)
        report = inspect_updates(tmp_path / "first" / INITRD)
        assert [(p["name"], p["installed"], p["available"], p["kind"]) for p in report["updates"]["pending"]] == [
            ("chrony", "1.0-1.osbuildertest", "1.0-2.osbuildertest", "updates")]
        (finding,) = [f for f in report["findings"] if f["code"] == "updates-available"]
        assert finding["severity"] == "info"

        result = build(tmp_path / "second")
        assert "bootstrapping afresh" in result.stderr and "updates/44/Everything" in result.stderr
        assert installed_version(tmp_path / "second", "chrony") == "1.0-2.osbuildertest"
        assert inspect_updates(tmp_path / "second" / INITRD)["updates"]["pending"] == []


def test_alpine_compares_with_its_branch(tmp_path, cache_dir):
    """apk: the branch is the only source and carries the fixes itself; a newer package on it
    is reported, and the cached bootstrap is installed afresh."""
    import dataclasses

    from osbuilder.foundation.arch import get_arch
    from tests.conftest import _extract_busybox
    from tests.local_repos.apk import ApkKey, alpine_packages, served_alpine_repo, write_repo

    with served_alpine_repo(tmp_path / "apk", cache_dir) as (mirror, url, key_file):
        def build(out: Path):
            result = run_cli("rootfs", "--distro", "alpine", "--init", "agent", "--probe-agent", "--mirror", url,
                             "--keyring", key_file, "--cache-dir", tmp_path / "cache", "-o", out)
            assert result.returncode == 0, result.stderr
            return result

        build(tmp_path / "first")
        summary = (tmp_path / "first" / "var/lib/osbuilder/osbuilder.yaml").read_text()
        assert f'  sources:\n    - name: "{url}/v3.22/main"\n' in summary
        assert inspect_updates(tmp_path / "first")["updates"]["pending"] == []
        busybox = _extract_busybox(get_arch("x86_64").debian, cache_dir).read_bytes()
        packages = [dataclasses.replace(p, version="5.2.37-r1") if p.name == "bash" else p
                    for p in alpine_packages(busybox, "x86_64")]
        key = ApkKey(Path(key_file).with_suffix(""), Path(key_file))  # the served repository's own key
        write_repo(mirror / "v3.22/main", packages, "x86_64", key)
        report = inspect_updates(tmp_path / "first")
        assert [(p["name"], p["available"], p["kind"]) for p in report["updates"]["pending"]] == [
            ("bash", "5.2.37-r1", "release")]
        assert "updates-available" in codes(report["findings"])
        result = build(tmp_path / "second")
        assert "bootstrapping afresh" in result.stderr
        assert inspect_updates(tmp_path / "second")["updates"]["pending"] == []
