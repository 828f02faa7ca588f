"""--slim's removal rules on small trees: packages' files, path globs, scripts orphaned by a
removed interpreter; what is protected, shared directories, and the counts recorded."""

from __future__ import annotations

from pathlib import Path

from osbuilder.foundation.fsutil import GuestRoot
from osbuilder.rootfs.slim import ORPHANED_SCRIPTS, Slimmer


def make_tree(root: Path) -> GuestRoot:
    for directory in ("usr/bin", "usr/sbin", "usr/lib/x86_64-linux-gnu/gconv", "usr/share/perl5", "etc"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "sbin").symlink_to("usr/sbin")
    (root / "bin").symlink_to("usr/bin")
    files = {"usr/bin/perl": "#!/usr/bin/env-less\n", "usr/share/perl5/Module.pm": "1;\n",
             "usr/bin/needs-perl": "#!/usr/bin/perl\nprint;\n", "usr/bin/sh": "#!/usr/bin/sh\n",
             "usr/bin/uses-sh": "#!/bin/sh\n", "usr/lib/x86_64-linux-gnu/gconv/UTF-16.so": "x" * 100,
             "usr/sbin/init": "#!/bin/sh\nexec agent\n", "etc/keep.conf": "keep\n"}
    for path, text in files.items():
        (root / path).write_text(text)
        (root / path).chmod(0o755)
    (root / "usr/bin/perl").write_text("#!/usr/bin/sh\n")  # an interpreter whose own interpreter exists
    return GuestRoot(root)


def test_rules_remove_package_files_globs_and_orphaned_scripts(tmp_path: Path):
    guest = make_tree(tmp_path)
    # dpkg lists name shared directories, including /sbin, which is a link to /usr/sbin here.
    perl_files = ("/usr", "/usr/bin", "/sbin", "/usr/bin/perl", "/usr/share/perl5", "/usr/share/perl5/Module.pm")
    record = Slimmer(guest, protected=("/sbin/init",)).run(
        {"perl-base": perl_files}, ("/usr/lib/*/gconv", "/sbin/init", "/etc/nothing*"))
    assert (tmp_path / "sbin").is_symlink() and (tmp_path / "usr/bin").is_dir()  # shared: kept
    assert not (tmp_path / "usr/bin/perl").exists() and not (tmp_path / "usr/share/perl5").exists()
    assert not (tmp_path / "usr/lib/x86_64-linux-gnu/gconv").exists()
    assert not (tmp_path / "usr/bin/needs-perl").exists()  # its interpreter went
    assert (tmp_path / "usr/bin/uses-sh").exists() and (tmp_path / "etc/keep.conf").exists()
    assert (tmp_path / "usr/sbin/init").exists()  # protected, although a rule names it
    rules = {rule.rule: (rule.files, rule.bytes) for rule in record.rules}
    assert rules["package perl-base"] == (2, len("#!/usr/bin/sh\n") + len("1;\n"))
    assert rules["/usr/lib/*/gconv"] == (1, 100)
    assert rules["/sbin/init"] == (0, 0) and rules["/etc/nothing*"] == (0, 0)
    assert rules[ORPHANED_SCRIPTS] == (1, len("#!/usr/bin/perl\nprint;\n"))
    assert record.packages == ("perl-base",) and record.files == 4
    assert record.as_json()["rules"][0] == {"rule": "package perl-base", "files": 2, "bytes": 17}


def test_a_directory_holding_something_protected_is_emptied_around_it(tmp_path: Path):
    guest = make_tree(tmp_path)
    record = Slimmer(guest, protected=("/sbin/init",)).run({}, ("/usr/sbin",))
    assert sorted(p.name for p in (tmp_path / "usr/sbin").iterdir()) == ["init"]
    assert record.rules[0].files == 0  # nothing else was in it
