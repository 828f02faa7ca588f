"""Defects the second review found, each with a test that fails without its fix: internal
failures reported as the user's, checks run twice per build, the rpm database looked for
in the wrong place."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import osbuilder
from osbuilder.foundation.errors import EXIT_BUILD_FAILED, InternalError
from osbuilder.foundation.fsutil import GuestRoot

PACKAGE = Path(osbuilder.__file__).resolve().parent


def calls_to(attribute: str) -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == attribute:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    return found


def test_internal_failures_exit_1_and_say_so():
    from osbuilder.cli import as_user_facing

    for error in (InternalError("debugfs left an error"), as_user_facing(KeyError("x"))):
        assert error.exit_code == EXIT_BUILD_FAILED
        assert str(error).startswith("internal error: ") and "report" in str(error)


def test_no_user_error_asks_to_be_reported_as_a_bug():
    """A failure the user cannot fix is not bad input (exit 2): it is an InternalError."""
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "UserError":
                text = " ".join(str(c.value) for c in ast.walk(node) if isinstance(c, ast.Constant))
                if re.search(r"\bbug\b|report this", text):
                    offences.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offences == []


def test_each_check_runs_once_per_build():
    # The package manager's preflight: when the options are made (config.make_rootfs_options).
    assert [site.split(":")[0] for site in calls_to("preflight")] == ["config.py"]
    # The image options: by the packer's validate, which build and `image` call before packing.
    assert [site.split(":")[0] for site in calls_to("validate") if site.startswith("pack/")] == ["pack/image.py"]
    from osbuilder.pack import image

    source = Path(image.__file__).read_text()
    pack_image = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef) and n.name == "pack_image")
    assert not [n for n in ast.walk(pack_image) if isinstance(n, ast.Attribute) and n.attr == "validate"]


def test_the_rpm_database_is_read_where_the_recipe_puts_it(tmp_path: Path):
    from osbuilder.rootfs.recipes import load_recipe
    from osbuilder.rootfs.backends.dnf import DnfBackend

    fedora = load_recipe("fedora").backend_section
    assert fedora.dbpath == "/usr/lib/sysimage/rpm"
    for database in ("var/lib/rpm", "usr/lib/sysimage/rpm"):  # both there: the recipe decides
        (tmp_path / database).mkdir(parents=True)
        (tmp_path / database / "rpmdb.sqlite").write_bytes(b"db")
    assert DnfBackend._dbpath(GuestRoot(tmp_path), fedora) == "/usr/lib/sysimage/rpm"
    centos = load_recipe("centos").backend_section
    assert DnfBackend._dbpath(GuestRoot(tmp_path), centos) == centos.dbpath == "/var/lib/rpm"
    (tmp_path / "usr/lib/sysimage/rpm/rpmdb.sqlite").unlink()
    assert DnfBackend._dbpath(GuestRoot(tmp_path), fedora) is None  # no database where the recipe says


def test_the_privilege_is_decided_once_and_carried_by_the_runner():
    import os

    from osbuilder.foundation.privilege import FAKEROOT, ROOT, USER, Privilege
    from osbuilder.foundation.runner import Runner

    expected = ROOT if os.geteuid() == 0 else USER
    assert Privilege.detect({}).mode == expected
    if expected == ROOT:  # a re-executed ordinary user's build: root ids, fakeroot's mark
        assert Privilege.detect({"OSBUILDER_FAKEROOT": "1"}).mode == FAKEROOT
    faked = Privilege(FAKEROOT, True)
    assert faked.sets_owners and not faked.root and faked.real_user_env()["LD_PRELOAD"] == ""
    assert Privilege(USER, False).owner_recording()[0] == "fakeroot" and Privilege(ROOT, True).owner_recording() == []
    assert Runner(privilege=faked).privilege is faked
