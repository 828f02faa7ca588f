"""A packer and an init mode, each added by one module (tests/throwaway/) that registers
itself on import and that nothing in osbuilder names, through the real command line:
build, --layout kata with its tarball, the runtime fragment, inspect and check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from tests.conftest import REPO, run_cli
from tests.helpers import fake_bootstrap

SHARE = "opt/kata/share/kata-containers"


def extended(tmp_path: Path):
    """run_cli with the throwaway modules loaded first, in every osbuilder process (a
    re-execution under fakeroot included), through sitecustomize."""
    site = tmp_path / "site"
    if not site.exists():
        site.mkdir()
        (site / "sitecustomize.py").write_text("import tests.throwaway.tar_packer\nimport tests.throwaway.script_init\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    return lambda *args: run_cli(*args, env=env)


def recipes_with_the_mode(tmp_path: Path) -> Path:
    """Debian's recipe, saying it supports the new mode (a recipe lists the modes it takes)."""
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    text = (REPO / "distros/debian.toml").read_text()
    assert 'init_modes = ["agent", "systemd", "launcher"]' in text
    (recipes / "debian.toml").write_text(text.replace('init_modes = ["agent", "systemd", "launcher"]',
                                                      'init_modes = ["agent", "systemd", "launcher", "script"]'))
    return recipes


def test_a_new_packer_and_init_mode_work_through_build_layout_inspect_check_and_the_fragment(tmp_path: Path):
    osbuilder = extended(tmp_path)
    existing = tmp_path / "tree"
    fake_bootstrap(existing, with_systemd=False)
    shutil.copy("/bin/busybox", existing / "usr/bin/sh")  # the start script's interpreter
    out = tmp_path / "out"
    built = osbuilder("build", "--existing", existing, "--distro", "debian", "--recipes-dir",
                      recipes_with_the_mode(tmp_path), "--init", "script", "--agent", "/bin/busybox",
                      "--format", "guesttar", "--layout", "kata", "--tarball", "--install-path", out / SHARE,
                      "-o", out, "--json")
    assert built.returncode == 0, built.stderr
    share = out / SHARE
    # The release names are the packer's.
    assert os.readlink(share / "kata-containers-tar.img") == "kata-debian-bookworm.tar"
    listing = subprocess.run(["tar", "--zstd", "-tf", str(out / "kata-static-rootfs-tar.tar.zst")],
                             capture_output=True, text=True, check=True).stdout.split()
    assert sorted(listing) == ["./", "./opt/", "./opt/kata/", "./opt/kata/share/", f"./{SHARE}/",
                               f"./{SHARE}/kata-containers-tar.img", f"./{SHARE}/kata-debian-bookworm.tar"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(a["format"], a["init_mode"]) for a in manifest["artifacts"]] == [("guesttar", "script")]
    assert manifest["artifacts"][0]["members"] > 10  # the packer's own details record
    # The fragment names the packer's slot and carries the packer's setting.
    fragment = (out / "kata-runtime.toml").read_text()
    assert f'image = "{share}/kata-containers-tar.img"' in fragment
    assert 'rootfs_type = "guesttar-fs"' in fragment and "guesttar" in fragment.splitlines()[0]

    # inspect recognises the format by its bytes and the mode from osbuilder.yaml.
    inspected = osbuilder("inspect", share / "kata-containers-tar.img", "--json",
                          "--runtime-config-fragment", tmp_path / "again.toml", "--install-path", share)
    assert inspected.returncode == 0, inspected.stderr
    report = json.loads(inspected.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report["artifact"]["kind"] == "guesttar"
    assert report["init_mode"] == {"value": "script", "source": "osbuilder.yaml", "inferred": False}
    assert report["cgroup_driver"]["value"] == "host"
    assert report["agent"]["path"] == "/usr/bin/kata-agent" and report["agent"]["verified"] is True
    assert report["findings"] == []
    assert (tmp_path / "again.toml").read_text() == fragment, "inspect and build wrote different fragments"

    # check: the fragment passes; the packer's setting and the mode's driver rule are applied.
    passed = osbuilder("check", "--runtime-config", out / "kata-runtime.toml", "--json")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    checked = json.loads(passed.stdout)
    assert [(c["kind"], c["init_mode"]) for c in checked["checked"]] == [("guesttar", "script")]
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(fragment.replace('rootfs_type = "guesttar-fs"', 'rootfs_type = "ext4"'))
    failed = osbuilder("check", "--runtime-config", wrong, "--host-cgroup-driver", "systemd", "--json")
    assert failed.returncode == 1
    codes = {f["code"] for f in json.loads(failed.stdout)["findings"]}
    assert codes == {"guesttar-rootfs-type", "launcher-host-systemd"}, codes

    # Without osbuilder.yaml the mode is inferred from the tree, by the mode itself.
    unpacked = tmp_path / "unpacked"
    with tarfile.open(share / "kata-debian-bookworm.tar") as archive:
        archive.extractall(unpacked, members=[m for m in archive.getmembers() if m.isfile() or m.isdir() or m.issym()])
    (unpacked / "var/lib/osbuilder/osbuilder.yaml").unlink()
    inferred = osbuilder("inspect", unpacked, "--json")
    assert inferred.returncode == 0, inferred.stderr
    fact = json.loads(inferred.stdout)
    fact = (fact[0] if isinstance(fact, list) else fact)["init_mode"]
    assert fact["value"] == "script" and fact["inferred"] is True, fact


def test_without_the_modules_osbuilder_knows_neither(tmp_path: Path):
    """The registrations are what make them work: plain osbuilder refuses both names."""
    refused = run_cli("build", "--distro", "debian", "--init", "script", "--probe-agent", "-o", tmp_path / "o")
    assert refused.returncode == 2 and "invalid choice: 'script'" in refused.stderr
    refused = run_cli("build", "--distro", "debian", "--init", "agent", "--probe-agent", "--format", "guesttar",
                      "-o", tmp_path / "o")
    assert refused.returncode == 2 and "guesttar" in refused.stderr
