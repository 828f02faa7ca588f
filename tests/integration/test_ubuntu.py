"""The Ubuntu recipe, proven against a local repository (Ubuntu's mirrors are out of reach).

The repository is real and signed: Debian's packages for the recipe's package set, indexed
under the suite of the recipe's default release (`resolute`, 26.04) and clear-signed with a
test key. mmdebstrap installs the recipe from it with `--keyring`, and the guest boots under
qemu with the probe.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from osbuilder.rootfs.recipes import load_recipe
from tests.conftest import run_cli
from tests.integration.booting import assert_probe, boot, pack
from tests.local_repos import GpgKey, serve_directory
from tests.local_repos.apt import build_apt_repo, collect_debs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ubuntu_mirror(tmp_path_factory, cache_dir):
    recipe = load_recipe("ubuntu")
    packages = tuple(dict.fromkeys(recipe.packages_for("x86_64", "systemd", True)
                                   + recipe.packages_for("x86_64", "agent", True)))
    debs = collect_debs(packages, "amd64", cache_dir)
    work = tmp_path_factory.mktemp("ubuntu-repo")
    key = GpgKey.create(work / "gnupg", "osbuilder test archive")
    release = recipe.default_release  # with its -updates and -security suites, which Ubuntu's archive carries too
    repo = build_apt_repo(work / "repo", debs, release, "main", "amd64", key,
                          more_suites=(f"{release}-updates", f"{release}-security"))
    other = GpgKey.create(work / "other-gnupg", "someone else")
    with serve_directory(repo) as url:
        yield url, key.export(work / "keyring.gpg"), other.export(work / "other.gpg")


def build_ubuntu(out: Path, init: str, mirror: str, keyring: Path):
    return run_cli("rootfs", "--distro", "ubuntu", "--init", init, "--probe-agent", "--mirror", mirror,
                   "--keyring", keyring, "-o", out, "--json")


@pytest.mark.parametrize("init", ["agent", "systemd"])
def test_ubuntu_guest_installs_from_a_signed_resolute_repository_and_boots(ubuntu_mirror, boot_cache, tmp_path, init):
    mirror, keyring, _ = ubuntu_mirror
    tree = tmp_path / "rootfs"
    result = build_ubuntu(tree, init, mirror, keyring)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["init_mode"] == init
    summary = (tree / "var/lib/osbuilder/osbuilder.yaml").read_text()
    assert 'name: "ubuntu"' in summary and 'version: "resolute"' in summary
    assert (tree / "usr/sbin/chronyd").is_file()
    assert (tree / "lib/systemd/systemd").exists() == (init == "systemd")
    initrd = pack("initrd", tree, tmp_path / "initrd.img")
    result, report = boot(initrd, boot_cache, "--host-cgroup-driver", "systemd")
    assert_probe(result, report, tree, "systemd")
    assert report["recorded_init_mode"] == init


def test_an_archive_signed_by_another_key_is_refused(ubuntu_mirror, tmp_path):
    mirror, _, other = ubuntu_mirror
    result = build_ubuntu(tmp_path / "rootfs", "agent", mirror, other)
    assert result.returncode == 1
    assert "is not signed" in result.stderr and "NO_PUBKEY" in result.stderr
    assert "--keyring" in result.error_lines[-1] or any("--keyring" in line for line in result.error_lines)
    assert not (tmp_path / "rootfs").exists()
