"""The closure check: every ELF finds its dynamic linker and libraries inside the guest
(RUNPATH, $ORIGIN, the guest's library path), every script its interpreter. Real ELFs,
compiled here with gcc, and the host's own C library copied into small trees."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from osbuilder.foundation.errors import UserError
from osbuilder.foundation.fsutil import GuestRoot
from osbuilder.rootfs.closure import check_closure

LIBC = ("/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2")


def gcc(*args: str | Path) -> None:
    subprocess.run(["gcc", *map(str, args)], check=True, capture_output=True)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A guest with the host's C library, a library in /opt/app/lib, and programs finding it
    through $ORIGIN (RPATH), an absolute RUNPATH, and the guest's ld.so.conf."""
    root = tmp_path / "root"
    for path in LIBC:
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / path.lstrip("/"))
    (root / "etc").mkdir()
    (root / "etc/ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
    (root / "etc/ld.so.conf.d").mkdir()
    (root / "etc/ld.so.conf.d/x86_64-linux-gnu.conf").write_text("/lib/x86_64-linux-gnu\n/srv/libs\n")
    src = tmp_path / "hello.c"
    src.write_text("int hello(void) { return 42; }\n")
    main = tmp_path / "main.c"
    main.write_text("int hello(void);\nint main(void) { return hello() == 42 ? 0 : 1; }\n")
    for directory in ("opt/app/lib", "srv/libs", "opt/app/bin", "usr/bin"):
        (root / directory).mkdir(parents=True)
    gcc("-shared", "-fPIC", "-o", root / "opt/app/lib/libhello.so.1", "-Wl,-soname,libhello.so.1", src)
    shutil.copy(root / "opt/app/lib/libhello.so.1", root / "srv/libs/libhello.so.1")
    link = ["-L", root / "opt/app/lib", "-l:libhello.so.1"]
    gcc("-o", root / "opt/app/bin/origin", main, *link, "-Wl,--disable-new-dtags,-rpath,$ORIGIN/../lib")
    gcc("-o", root / "usr/bin/runpath", main, *link, "-Wl,--enable-new-dtags,-rpath,/opt/app/lib")
    gcc("-o", root / "usr/bin/ldconf", main, *link)
    return root


def test_origin_runpath_and_ld_so_conf_libraries_are_found(tree: Path):
    check_closure(GuestRoot(tree))


def test_a_library_removed_by_hand_is_refused_naming_who_needs_it(tree: Path):
    (tree / "srv/libs/libhello.so.1").unlink()
    with pytest.raises(UserError, match=r"/usr/bin/ldconf needs the library libhello\.so\.1"):
        check_closure(GuestRoot(tree))
    (tree / "lib/x86_64-linux-gnu/libc.so.6").unlink()
    with pytest.raises(UserError) as err:
        check_closure(GuestRoot(tree))
    assert "needs the library libc.so.6" in str(err.value) and "more)" in str(err.value)


def test_a_missing_dynamic_linker_is_refused(tree: Path):
    (tree / "lib64/ld-linux-x86-64.so.2").unlink()
    with pytest.raises(UserError, match=r"/opt/app/bin/origin needs its dynamic linker /lib64/ld-linux-x86-64\.so\.2"):
        check_closure(GuestRoot(tree))


def test_a_script_whose_interpreter_is_gone_is_refused(tree: Path):
    script = tree / "usr/bin/tool"
    script.write_text("#!/usr/bin/perl\nprint 1;\n")
    script.chmod(0o755)
    with pytest.raises(UserError, match=r"/usr/bin/tool needs its interpreter /usr/bin/perl"):
        check_closure(GuestRoot(tree))
    script.write_text("#!/usr/bin/env python3\n")
    (tree / "usr/bin/env").write_text("#!/usr/bin/env\n")  # an env that exists (itself a script)
    (tree / "usr/bin/env").chmod(0o755)
    with pytest.raises(UserError, match=r"/usr/bin/tool needs the command python3 \(#!/usr/bin/env python3\)"):
        check_closure(GuestRoot(tree))
    script.chmod(0o644)  # not executable: a file, not a program
    check_closure(GuestRoot(tree))


def test_a_link_never_leads_the_check_onto_the_host(tree: Path):
    """An absolute link in the guest means the guest's path: /lib64 -> /nonexistent is broken
    in the guest even if the host had that path."""
    shutil.rmtree(tree / "lib64")
    (tree / "lib64").symlink_to("/lib64")  # on the host this would find the host's ld.so
    with pytest.raises(UserError, match="needs its dynamic linker /lib64/ld-linux-x86-64.so.2"):
        check_closure(GuestRoot(tree))


def test_required_tools_are_named(tree: Path):
    with pytest.raises(UserError, match="the guest lacks iptables, chronyd, which the recipe says it needs"):
        check_closure(GuestRoot(tree), ("iptables", "chronyd", "ldconf"))


@pytest.mark.parametrize("command", ["initrd", "image"])
def test_the_packers_refuse_a_tree_that_would_fail_at_run_time(tmp_path: Path, host_agent: Path, command: str):
    from tests.conftest import run_cli
    from tests.helpers import make_minimal_guest

    guest = make_minimal_guest(tmp_path / "guest", host_agent)
    broken = guest / "usr/bin/needs-perl"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_text("#!/usr/bin/perl\n")
    broken.chmod(0o755)
    result = run_cli(command, guest, "-o", tmp_path / "out.img")
    assert result.returncode == 2
    assert result.error_lines == ["osbuilder: error: the guest would fail at run time: /usr/bin/needs-perl needs its "
                                  "interpreter /usr/bin/perl; keep or add what they need (check the recipe's removals, "
                                  "--overlay and the tree), or remove them"]
    assert not (tmp_path / "out.img").exists()
