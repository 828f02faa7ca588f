"""A dynamically linked agent must find its dynamic linker and every library it needs inside
the rootfs, along the guest's own library path; nothing is run to find out."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from osbuilder.foundation.elf import read_dynamic
from osbuilder.foundation.errors import UserError
from osbuilder.foundation.fsutil import GuestRoot
from osbuilder.rootfs.libraries import check_libraries, library_dirs
from tests.helpers import make_minimal_guest

DYNAMIC = Path("/usr/bin/true")  # Debian's coreutils: needs ld-linux-x86-64.so.2 and libc.so.6
MULTIARCH = "usr/lib/x86_64-linux-gnu"


def test_the_dynamic_section_is_read_from_the_file():
    info = read_dynamic(DYNAMIC.read_bytes())
    assert info.interpreter == "/lib64/ld-linux-x86-64.so.2" and info.needed == ("libc.so.6",)
    assert read_dynamic(Path("/bin/busybox").read_bytes()) is None  # static


def add_libc(root: Path, with_libc: bool = True) -> None:
    (root / "lib64").mkdir(exist_ok=True)
    shutil.copy2("/lib64/ld-linux-x86-64.so.2", root / "lib64/ld-linux-x86-64.so.2")
    (root / MULTIARCH).mkdir(parents=True, exist_ok=True)
    if with_libc:
        shutil.copy2(f"/{MULTIARCH}/libc.so.6", root / MULTIARCH / "libc.so.6")
    conf = root / "etc/ld.so.conf.d"
    conf.mkdir(parents=True, exist_ok=True)
    (root / "etc/ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
    (conf / "x86_64-linux-gnu.conf").write_text(f"# Multiarch support\n/{MULTIARCH}\n")


def test_a_dynamic_agent_whose_libc_is_missing_is_refused(tmp_path: Path):
    with pytest.raises(UserError, match="needs the dynamic linker /lib64/ld-linux-x86-64.so.2"):
        make_minimal_guest(tmp_path / "bare", DYNAMIC)
    root = tmp_path / "no-libc"
    root.mkdir()
    add_libc(root, with_libc=False)
    with pytest.raises(UserError, match=r"\(/sbin/init\) needs libc.so.6 \(from /usr/sbin/init\)"):
        make_minimal_guest(root, DYNAMIC)


def test_a_dynamic_agent_whose_libraries_are_there_is_accepted(tmp_path: Path):
    root = tmp_path / "with-libc"
    root.mkdir()
    add_libc(root)
    assert f"/{MULTIARCH}" in library_dirs(GuestRoot(root))
    make_minimal_guest(root, DYNAMIC, "systemd")
    check_libraries(GuestRoot(root), "/usr/bin/kata-agent", "the agent")


def test_the_library_path_is_the_guests_not_the_hosts(tmp_path: Path):
    root = tmp_path / "guest"
    root.mkdir()
    add_libc(root)
    (root / "etc/ld.so.conf.d/x86_64-linux-gnu.conf").write_text(f"/{MULTIARCH}-elsewhere\n")
    # The host has libc.so.6 in /usr/lib/x86_64-linux-gnu; the guest's path no longer names it.
    with pytest.raises(UserError, match="needs libc.so.6"):
        make_minimal_guest(root, DYNAMIC)
