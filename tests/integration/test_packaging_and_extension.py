"""osbuilder as its users get it and extend it: a wheel installed outside the checkout, a
distribution added as one recipe file, and the ISO packer on a real tree under a low
open-file limit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from osbuilder.foundation.guest_layout import SUMMARY_PATH
from osbuilder.rootfs.summary import parse_summary
from tests.conftest import REPO, run_cli
from tests.helpers import make_minimal_guest

pytestmark = pytest.mark.slow

SHIPPED = ("osbuilder", "distros", "templates", "schemas", "setup.py", "pyproject.toml", "README.md")


def test_a_wheel_installed_elsewhere_finds_its_recipes_and_templates(tmp_path: Path, host_agent: Path):
    source = tmp_path / "source"
    source.mkdir()
    for name in SHIPPED:  # a copy, so the build leaves nothing in the checkout
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                             if (REPO / name).is_dir() else {}))
    # Keyrings of every kind a recipe may keep beside it ship with it.
    for name in ("keys/extra/archive.gpg", "keys/extra/archive.asc", "vendor-keyring.gpg"):
        (source / "distros" / name).parent.mkdir(parents=True, exist_ok=True)
        (source / "distros" / name).write_bytes(b"key")
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)],
                   check=True, capture_output=True)
    (wheel,) = wheels.glob("osbuilder-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    for name in ("keys/extra/archive.gpg", "keys/extra/archive.asc", "vendor-keyring.gpg", "debian.toml"):
        assert f"osbuilder/data/distros/{name}" in shipped, f"{name} is not in the wheel"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([venv / "bin/pip", "install", "-q", str(wheel)], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(source)  # nothing of the source tree may be needed any more

    distros = subprocess.run([venv / "bin/osbuilder", "distros", "--json"], capture_output=True, text=True,
                             cwd=elsewhere)
    assert distros.returncode == 0, distros.stderr
    rows = json.loads(distros.stdout)["combinations"]
    assert {row["distro"] for row in rows} == {"alpine", "cbl-mariner", "centos", "debian", "fedora", "ubuntu"}
    # Alpine's keys ship beside its recipe: with them found, the build gets as far as the mirror.
    alpine = subprocess.run([venv / "bin/osbuilder", "rootfs", "--distro", "alpine", "--init", "agent",
                             "--probe-agent", "--mirror", "http://127.0.0.1:9", "-o", "alpine"],
                            capture_output=True, text=True, cwd=elsewhere)
    assert alpine.returncode == 1 and "downloading http://127.0.0.1:9/v3.22/main/x86_64/APKINDEX.tar.gz" in alpine.stderr

    tree = make_minimal_guest(tmp_path / "guest", host_agent)
    packed = subprocess.run([venv / "bin/osbuilder", "initrd", str(tree), "-o", "guest.img", "--json"],
                            capture_output=True, text=True, cwd=elsewhere)
    assert packed.returncode == 0, packed.stderr
    assert json.loads(packed.stdout)["init_mode"] == "agent"
    assert (elsewhere / "guest.img").read_bytes()[:2] == b"\x1f\x8b"

    rendered = subprocess.run([venv / "bin/python", "-c",
                               "from osbuilder.foundation.templates import Templates; from osbuilder.foundation.resources import "
                               "templates_dir, schemas_dir; print(templates_dir()); "
                               "assert (schemas_dir() / 'manifest.v1.schema.json').is_file(); "
                               "print(Templates().render('kata-agent.service.j2', agent_path='/usr/bin/kata-agent'))"],
                              capture_output=True, text=True, cwd=elsewhere)
    assert rendered.returncode == 0, rendered.stderr
    where, _, unit = rendered.stdout.partition("\n")
    assert where.startswith(str(venv)) and "ExecStart=/usr/bin/kata-agent" in unit


TINY_RECIPE = """
name = "tinydeb"
description = "Debian with the fewest packages, added without code"
backend = "apt"
default_release = "bookworm"
releases = ["bookworm"]
mirror = "http://deb.debian.org/debian"
init_modes = ["agent"]
arches = ["x86_64"]

[apt]
components = ["main"]

[packages]
always = ["dbus"]
"""


def test_a_distribution_is_one_recipe_file(tmp_path: Path, host_agent: Path):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "tinydeb.toml").write_text(TINY_RECIPE)
    listed = run_cli("distros", "--recipes-dir", recipes, "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["combinations"] == [
        {"distro": "tinydeb", "aliases": [], "release": "bookworm", "default_release": True, "arch": "x86_64",
         "init_mode": "agent", "backend": "apt", "mirror": "http://deb.debian.org/debian", "proven": "none"}]
    refused = run_cli("rootfs", "--recipes-dir", recipes, "--distro", "tinydeb", "--init", "systemd",
                      "--agent", host_agent, "-o", tmp_path / "no")
    assert refused.returncode == 2 and "supports only init mode 'agent'" in refused.stderr

    out = tmp_path / "rootfs"
    # A dynamically linked agent (the host's coreutils) resolves against the guest's own libc.
    built = run_cli("rootfs", "--recipes-dir", recipes, "--distro", "tinydeb", "--init", "agent",
                    "--agent", "/usr/bin/true", "--no-seccomp", "-o", out)
    assert built.returncode == 0, built.stderr
    summary = parse_summary((out / SUMMARY_PATH.lstrip("/")).read_text())
    assert summary["base-distro"]["name"] == "tinydeb"
    assert summary["base-distro"]["packages"]["default"] == ["dbus"]
    assert (out / "usr/bin/dbus-daemon").exists() and not (out / "usr/bin/chronyc").exists()
    # Minutes of silence no more: without a terminal, each bootstrap phase is one log line.
    for phase in ("mmdebstrap: updating the package lists", "mmdebstrap: downloading packages",
                  "mmdebstrap: installing essential packages"):
        assert phase in built.stderr, built.stderr


def test_iso_of_a_real_tree_under_a_low_open_file_limit(rootfs, tmp_path: Path, agent_x86_64: Path):
    tree = rootfs.get("systemd", "x86_64", agent_x86_64)
    files = sum(1 for p in tree.rglob("*") if p.is_file() and not p.is_symlink())
    assert files > 1000, "the tree is too small to prove anything"
    out = tmp_path / "guest.iso"
    result = subprocess.run(["bash", "-c", 'ulimit -n 256 && exec "$@"', "pack", sys.executable, "-m", "osbuilder",
                             "iso", str(tree), "-o", str(out)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    listing = subprocess.run(["xorriso", "-indev", str(out), "-find", "/", "-type", "f"], capture_output=True,
                             text=True, check=True).stdout
    assert listing.count("\n") >= files - 10
