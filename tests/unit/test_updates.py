"""Update and security sources: which suites a recipe installs from, how they are recorded
and refused, the version orders `inspect --updates` compares with (checked against dpkg's and
rpm's own), and the findings it raises. The whole path against a served archive is
tests/integration/test_updates.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from osbuilder.foundation.errors import UserError
from osbuilder.rootfs.backends.apt import ReleaseFile
from osbuilder.rootfs.backends.base import RELEASE, SECURITY, UPDATES, PackageSource
from osbuilder.rootfs.backends.versions import compare_debian, compare_rpm
from osbuilder.rootfs.lock import PackageLock
from osbuilder.rootfs.recipes import load_recipe, parse_recipe
from osbuilder.updates import PendingUpdate, UpdatesReport, update_findings
from tests.conftest import run_cli

DEBIAN_PAIRS = [
    ("1.0", "1.0"), ("1.0", "1.1"), ("1.0-1", "1.0-2"), ("1:0.9", "2.0"), ("1.0~rc1", "1.0"), ("1.0~~", "1.0~"),
    ("1.0+b1", "1.0"), ("2.36-9+deb12u13", "2.36-9+deb12u14"), ("3.0.20-1~deb12u2", "3.0.22-1~deb12u2"),
    ("1:1.2.13.dfsg-1", "1:1.2.13.dfsg-1+deb12u1"), ("2026b-0+deb12u1", "2026f-0+deb12u1"), ("1.0a", "1.0+"),
    ("10.42-1", "10.42-1+deb12u2"), ("1.2.3", "1.2.10"), ("0.9.1-2", "0.9.1-10"), ("1.0-1", "1.0"), ("a", "b"),
    ("2.5.4-1+deb12u1", "2.5.4-1+deb12u1+deb12u99"), ("1.0.0", "1.0"), ("01", "1"), ("1.0-0.1", "1.0-0.01"),
]
RPM_PAIRS = [
    ("1.0", "1.0"), ("1.0", "2.0"), ("2.0.1", "2.0"), ("1.0a", "1.0"), ("1.0~rc1", "1.0"), ("1.0^", "1.0"),
    ("1.0^", "1.0.1"), ("1.0^git1", "1.0^git2"), ("1:1.0-1", "2.0-1"), ("1.0-2", "1.0-10"), ("a", "1"),
    ("1.0-1.fc44", "1.0-1.fc43"), ("1.01", "1.1"), ("2.0-1", "2.0"), ("1.0-1.osbuildertest", "1.0-2.osbuildertest"),
    ("3.0.7-27.el9", "3.0.7-25.el9"), ("1.0~~", "1.0~"), ("1.0.0", "1.0"), ("10", "9"),
]


def sign(value: int) -> int:
    return (value > 0) - (value < 0)


@pytest.mark.parametrize("left,right", DEBIAN_PAIRS)
def test_debian_versions_order_as_dpkg_orders_them(left, right):
    for a, b in ((left, right), (right, left)):
        truth = 0 if subprocess.run(["dpkg", "--compare-versions", a, "eq", b]).returncode == 0 else \
            -1 if subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0 else 1
        assert sign(compare_debian(a, b)) == truth, (a, b)


def test_rpm_versions_order_as_rpm_orders_them():
    script = " ".join(f"print(rpm.vercmp('{a}', '{b}'), ' ')" for pair in RPM_PAIRS for a, b in (pair, pair[::-1]))
    truths = [int(v) for v in subprocess.run(["rpm", "--eval", f"%{{lua: {script}}}"], capture_output=True,
                                             text=True, check=True).stdout.split()]
    mine = [sign(compare_rpm(a, b)) for pair in RPM_PAIRS for a, b in (pair, pair[::-1])]
    assert mine == truths


def test_debian_installs_from_its_updates_and_its_security_archive():
    recipe = load_recipe("debian")
    sources = recipe.backend.package_sources("trixie", "http://mirror.example/debian", recipe.backend_section, True)
    assert sources == (PackageSource("trixie", "http://mirror.example/debian", RELEASE),
                       PackageSource("trixie-updates", "http://mirror.example/debian", UPDATES),
                       PackageSource("trixie-security", "http://deb.debian.org/debian-security", SECURITY))
    assert recipe.backend.package_sources("trixie", "http://m/debian", recipe.backend_section, False) == (
        PackageSource("trixie", "http://m/debian", RELEASE),)
    moved = recipe.backend.apply_overrides(recipe.backend_section, {"security_mirror": "http://local/sec"})
    assert recipe.backend.package_sources("bookworm", "http://m", moved, True)[-1] == \
        PackageSource("bookworm-security", "http://local/sec", SECURITY)


def test_ubuntu_takes_its_security_suite_from_the_archive_of_the_arch():
    recipe = load_recipe("ubuntu")
    sources = recipe.backend.package_sources("noble", recipe.mirror_for("aarch64"), recipe.backend_section, True)
    assert [(s.name, s.url, s.kind) for s in sources] == [
        ("noble", "http://ports.ubuntu.com/ubuntu-ports", RELEASE),
        ("noble-updates", "http://ports.ubuntu.com/ubuntu-ports", UPDATES),
        ("noble-security", "http://ports.ubuntu.com/ubuntu-ports", SECURITY)]


def test_fedora_adds_its_updates_repository_and_alpine_its_branch_alone():
    fedora = load_recipe("fedora")
    sources = fedora.backend.package_sources("44", "https://m/fedora/linux", fedora.backend_section, True)
    assert [(s.url, s.kind) for s in sources] == [
        ("https://m/fedora/linux/releases/44/Everything/$basearch/os/", RELEASE),
        ("https://m/fedora/linux/updates/44/Everything/$basearch/", UPDATES)]
    assert len(fedora.backend.package_sources("44", "https://m", fedora.backend_section, False)) == 1
    alpine = load_recipe("alpine")
    assert alpine.backend.package_sources("3.22", "https://m/alpine", alpine.backend_section, True) == (
        PackageSource("https://m/alpine/v3.22/main", "https://m/alpine/v3.22/main", RELEASE),)


INRELEASE = """-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA512

Origin: Debian
Codename: bookworm-security
Date: Wed, 02 Dec 2026 23:13:43 UTC
Valid-Until: Wed, 09 Dec 2026 23:13:43 UTC
MD5Sum:
 0123456789abcdef0123456789abcdef  2579986 main/binary-amd64/Packages
SHA256:
 {a}  2579986 main/binary-amd64/Packages
 {b}   385532 main/binary-amd64/Packages.xz
 {c}   385532 main/binary-arm64/Packages.xz
 {d}     1200 contrib/binary-amd64/Packages.xz
-----BEGIN PGP SIGNATURE-----

 {e}   385532 main/binary-amd64/Packages.gz
-----END PGP SIGNATURE-----
""".format(a="a" * 64, b="b" * 64, c="c" * 64, d="d" * 64, e="e" * 64)


def test_a_suite_s_digest_is_its_packages_indexes_for_the_build_s_components_and_arch():
    release = ReleaseFile(PackageSource("bookworm-security", "http://x"), "http://x/InRelease", INRELEASE)
    assert release.package_indexes(("main",), "amd64") == {
        "main": [("b" * 64, 385532, "main/binary-amd64/Packages.xz"), ("a" * 64, 2579986, "main/binary-amd64/Packages")]}
    assert release.package_indexes(("main", "contrib"), "arm64")["contrib"] == []
    # A re-signed, re-dated file with the same indexes is the same suite.
    later = INRELEASE.replace("02 Dec", "03 Dec").replace("09 Dec", "10 Dec")
    assert ReleaseFile(release.source, release.url, later).package_indexes(("main",), "amd64") == \
        release.package_indexes(("main",), "amd64")


def _recipe_with(tmp_path: Path, apt_lines: str) -> Path:
    text = load_recipe("debian").path.read_text()
    path = tmp_path / "debian.toml"
    key = apt_lines.split(" = ")[0]
    kept = [line for line in text.splitlines(keepends=True) if not line.startswith(f"{key} = ")]
    path.write_text("".join(kept).replace('[apt]\ncomponents = ["main"]\n', f'[apt]\ncomponents = ["main"]\n{apt_lines}\n', 1))
    return path


@pytest.mark.parametrize("line,fault", [
    ('security_mirror = "ftp://mirror/debian-security"', "apt.security_mirror: mirror 'ftp://mirror/debian-security'"),
    ('security_mirror = 3', "key 'apt.security_mirror' must be a str"),
    ('updates = ["{release}-updates; reboot"]', "apt.updates"),
])
def test_a_recipe_s_update_sources_are_checked(tmp_path, line, fault):
    path = _recipe_with(tmp_path, line)
    with pytest.raises(UserError) as caught:
        parse_recipe(path)
    assert fault in caught.value.message


@pytest.mark.parametrize("args,error", [
    (("--distro", "centos", "--security-mirror", "http://mirror.example/sec"),
     "--security-mirror does not apply to the dnf package manager; drop --security-mirror"),
    (("--distro", "debian", "--security-mirror", "ftp://mirror/sec"),
     "--security-mirror: mirror 'ftp://mirror/sec' is not an http, https or file URL; write it as http://host/path"),
])
def test_a_security_mirror_that_cannot_apply_is_refused(tmp_path, args, error):
    result = run_cli("rootfs", *args, "--init", "agent", "--probe-agent", "-o", tmp_path / "out")
    assert result.returncode == 2
    assert result.error_lines == [f"osbuilder: error: {error}"]
    assert not (tmp_path / "out").exists()


def test_an_existing_tree_takes_no_security_mirror(tmp_path):
    (tmp_path / "tree").mkdir()
    result = run_cli("rootfs", "--distro", "debian", "--init", "agent", "--probe-agent", "--existing",
                     tmp_path / "tree", "--security-mirror", "http://m/sec", "-o", tmp_path / "out")
    assert result.returncode == 2
    assert result.error_lines == ["osbuilder: error: --security-mirror does not apply to --existing (nothing is "
                                  "installed); drop --security-mirror"]


def _lock(tmp_path: Path, **changes) -> Path:
    data = {"lock_version": 1, "distro": "debian", "release": "bookworm", "arch": "x86_64", "backend": "apt",
            "mirror": "http://m/debian", "recipe_sha256": "0" * 64, "source_date_epoch": 1, "requested": ["a"],
            "packages": [{"name": "a", "version": "1", "architecture": "amd64"}], **changes}
    path = tmp_path / "packages.lock"
    path.write_text(json.dumps(data))
    return path


def test_a_lock_records_its_sources_and_an_older_lock_names_none(tmp_path):
    sources = [{"name": "bookworm", "url": "http://m/debian", "kind": "release"},
               {"name": "bookworm-security", "url": "http://m/sec", "kind": "security"}]
    lock = PackageLock.read(_lock(tmp_path, sources=sources))
    assert lock.sources == (PackageSource("bookworm", "http://m/debian", RELEASE),
                            PackageSource("bookworm-security", "http://m/sec", SECURITY))
    lock.write(tmp_path / "again.lock")
    assert json.loads((tmp_path / "again.lock").read_text())["sources"] == sources
    assert PackageLock.read(_lock(tmp_path)).sources == ()  # written before sources were recorded
    with pytest.raises(UserError) as caught:
        PackageLock.read(_lock(tmp_path, sources=[{"name": "bookworm"}]))
    assert "'sources' is missing or not what a packages.lock holds" in caught.value.message


def _pending(name: str, kind: str) -> PendingUpdate:
    suite = {"security": "bookworm-security", "updates": "bookworm-updates", "release": "bookworm"}[kind]
    return PendingUpdate(name, "1.0-1", "1.0-1+deb12u1", "amd64", PackageSource(suite, "http://m", kind))


def test_security_updates_are_a_warning_and_other_updates_information():
    built = (PackageSource("bookworm", "http://m"), PackageSource("bookworm-security", "http://m", SECURITY))
    report = UpdatesReport(sources=built, built_from=built,
                           pending=[_pending(f"lib{i}", "security") for i in range(7)] + [_pending("tzdata", "updates")])
    security, other = update_findings(report, "guest.img")
    assert (security.severity, security.code, other.severity, other.code) == (
        "warning", "security-updates-available", "info", "updates-available")
    assert security.message.startswith("7 package(s) have a newer version in a security suite: "
                                       "lib0 1.0-1 -> 1.0-1+deb12u1 (bookworm-security), ")
    assert security.message.endswith("and 2 more") and security.subject == "guest.img"
    assert "tzdata 1.0-1 -> 1.0-1+deb12u1 (bookworm-updates)" in other.message
    assert update_findings(UpdatesReport(sources=built, built_from=built), "g") == []
    (unknown,) = update_findings(UpdatesReport(unknown="the artifact records no package list"), "g")
    assert (unknown.severity, unknown.code) == ("info", "updates-unknown")


def _suite(mirror: Path, suite: str, arches: str, listed: str) -> None:
    (mirror / "dists" / suite).mkdir(parents=True)
    (mirror / "dists" / suite / "Release").write_text(
        f"Suite: {suite}\nDate: Wed, 02 Dec 2026 23:13:43 UTC\nArchitectures: {arches}\nComponents: main\nSHA256:\n"
        + "".join(f" {'a' * 64} 10 main/binary-{arch}/Packages\n" for arch in listed.split()))


def test_a_security_suite_that_no_longer_serves_the_arch_is_left_out(tmp_path, caplog):
    """bookworm-security dropped s390x when bookworm's LTS began: the build goes on without it,
    says so, and records only what it installed from."""
    from osbuilder.foundation.arch import get_arch
    from osbuilder.foundation.runner import Runner
    from osbuilder.rootfs.backends.base import InstallRequest

    recipe = load_recipe("debian")
    mirror, security = tmp_path / "debian", tmp_path / "debian-security"
    _suite(mirror, "bookworm", "amd64 s390x", "amd64 s390x")
    _suite(mirror, "bookworm-updates", "amd64 s390x", "amd64 s390x")
    _suite(security, "bookworm-security", "amd64 arm64 ppc64el", "amd64 arm64 ppc64el")
    section = recipe.backend.apply_overrides(recipe.backend_section, {"security_mirror": security.as_uri()})
    for arch, unserved in (("s390x", ("bookworm-security",)), ("x86_64", ())):
        sources = recipe.backend.package_sources("bookworm", mirror.as_uri(), section, True)
        request = InstallRequest("debian", "bookworm", get_arch(arch), (), mirror.as_uri(), section, None,
                                 sources=sources)
        state = recipe.backend.read_indexes(request, tmp_path / f"work-{arch}", Runner())
        assert state.unserved == unserved
        assert [name for name, _ in state.digests] == [s.name for s in sources if s.name not in unserved]
    assert "the security suite bookworm-security publishes nothing for s390x (it serves amd64 arm64 ppc64el)" \
        in caplog.text
    # The release itself must serve the arch.
    with pytest.raises(UserError) as caught:
        request = InstallRequest("debian", "bookworm", get_arch("aarch64"), (), mirror.as_uri(), section, None,
                                 sources=recipe.backend.package_sources("bookworm", mirror.as_uri(), section, True))
        recipe.backend.read_indexes(request, tmp_path / "work-arm64", Runner())
    assert "lists no Packages index for main on arm64" in caught.value.message
