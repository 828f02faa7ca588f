"""The apk installer's pieces: version order, dependency atoms, resolution, stream splitting
and the installed-database record."""

from __future__ import annotations

import gzip

import pytest

from osbuilder.foundation.errors import UserError
from osbuilder.rootfs.backends.apk.database import InstalledFile, InstalledPackage
from osbuilder.rootfs.backends.apk.index import parse_apkindex
from osbuilder.rootfs.backends.apk.resolve import Resolver
from osbuilder.rootfs.backends.apk.segments import gzip_streams
from osbuilder.rootfs.backends.apk.version import Atom, Version


@pytest.mark.parametrize("older, newer", [
    ("1.2.2", "1.2.3_alpha2"), ("1.2.3_alpha2", "1.2.3_rc1"), ("1.2.3_rc1", "1.2.3"), ("1.2.3", "1.2.3-r1"),
    ("1.2.3-r1", "1.2.3_p1"), ("1.9", "1.10"), ("1.2", "1.2a"), ("1.2", "1.2.1"), ("2.5.5-r2", "2.6.0-r0"),
])
def test_apk_version_order(older, newer):
    assert Version(older) < Version(newer) and not Version(newer) < Version(older)


@pytest.mark.parametrize("text, version, allowed", [
    ("iptables", "1.0", True), ("iptables=1.8.11-r1", "1.8.11-r1", True), ("iptables=1.8.11-r1", "1.8.11-r2", False),
    ("musl>=1.2", "1.2.5-r10", True), ("musl<1.2", "1.2.5-r10", False), ("foo~1.2", "1.2.7-r0", True),
    ("foo~1.2", "1.20-r0", False), ("so:libc.musl-x86_64.so.1", None, True), ("cmd:sh>=1", None, False),
])
def test_atoms(text, version, allowed):
    assert Atom.parse(text).allows(version) is allowed


def index(text: str):
    return parse_apkindex(text.strip() + "\n", "http://repo", "APKINDEX")


REPO = """
C:Q1a=
P:app
V:1.0-r0
D:libfoo>=2 so:libbar.so.1 !oldapp

C:Q1b=
P:libfoo
V:1.0-r0

C:Q1c=
P:libfoo
V:2.1-r0

C:Q1d=
P:bar
V:3-r0
p:so:libbar.so.1=1.0

C:Q1e=
P:app-doc
V:1.0-r0
i:app docs

C:Q1f=
P:app-extra
V:1.0-r0
i:app libfoo

C:Q1g=
P:oldapp
V:0.9-r0
"""


def test_resolution_picks_constraints_virtuals_install_if_and_orders_dependencies_first():
    order = Resolver(index(REPO)).resolve([Atom.parse("app")])
    assert [(e.name, e.version) for e in order] == [("libfoo", "2.1-r0"), ("bar", "3-r0"), ("app", "1.0-r0"),
                                                    ("app-extra", "1.0-r0")]


def test_a_missing_dependency_names_who_needs_it():
    with pytest.raises(UserError, match=r"nothing satisfies 'nothere' \(needed by the package list\) \(no package"):
        Resolver(index(REPO)).resolve([Atom.parse("nothere")])
    with pytest.raises(UserError, match=r"nothing satisfies 'libfoo>=3' \(needed by the package list\)"):
        Resolver(index(REPO)).resolve([Atom.parse("libfoo>=3")])


def test_a_conflict_is_refused():
    with pytest.raises(UserError, match="app conflicts with 'oldapp'"):
        Resolver(index(REPO)).resolve([Atom.parse("app"), Atom.parse("oldapp")])


def test_gzip_streams_keep_each_members_compressed_bytes():
    first, second = gzip.compress(b"one", mtime=0), gzip.compress(b"two", mtime=0)
    streams = gzip_streams(first + second, "x")
    assert [(s.compressed, s.data) for s in streams] == [(first, b"one"), (second, b"two")]
    with pytest.raises(UserError, match="x ends inside a gzip stream"):
        gzip_streams(first + second[:-4], "x")


def test_installed_record_lists_directories_owners_files_and_checksums():
    entry = index("C:Q1x=\nP:pkg\nV:1-r0\nA:x86_64\nD:musl\n")[0]
    record = InstalledPackage(entry, directories={"etc": (0, 0, 0o755), "tmp": (0, 0, 0o1777)},
                              files=[InstalledFile("etc/conf", (0, 0, 0o644), "Q1c="),
                                     InstalledFile("usr/bin/tool", (0, 0, 0o755), "Q1t=")]).record()
    assert record == ("C:Q1x=\nP:pkg\nV:1-r0\nA:x86_64\nD:musl\nF:etc\nR:conf\nZ:Q1c=\nF:tmp\nM:0:0:1777\n"
                      "F:usr/bin\nR:tool\na:0:0:755\nZ:Q1t=\n")
