import os
from pathlib import Path

import pytest

from osbuilder.foundation.errors import UserError
from osbuilder.foundation.fsutil import GuestRoot, check_output_path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "usr/sbin").mkdir(parents=True)
    (root / "etc").mkdir()
    os.symlink("usr/sbin", root / "sbin")
    return root


@pytest.fixture
def host_file(tmp_path: Path) -> Path:
    path = tmp_path / "host-secret"
    path.write_text("host content\n")
    return path


def test_absolute_links_resolve_inside_the_tree(tree: Path, host_file: Path):
    os.symlink(str(host_file), tree / "etc/resolv.conf")
    guest = GuestRoot(tree)
    assert guest.resolve("/etc/resolv.conf") == tree / host_file.relative_to("/")
    assert guest.resolve("/sbin/init") == tree / "usr/sbin/init"


def test_dotdot_cannot_climb_out(tree: Path):
    os.symlink("../../../../../../etc/passwd", tree / "etc/passwd-link")
    guest = GuestRoot(tree)
    assert guest.resolve("/etc/passwd-link") == tree / "etc/passwd"
    assert guest.resolve("/../../etc/shadow") == tree / "etc/shadow"


def test_write_replaces_a_link_instead_of_following_it(tree: Path, host_file: Path):
    os.symlink(str(host_file), tree / "etc/resolv.conf")
    GuestRoot(tree).write_text("/etc/resolv.conf", "")
    assert host_file.read_text() == "host content\n"
    assert (tree / "etc/resolv.conf").is_file() and not (tree / "etc/resolv.conf").is_symlink()


def test_write_through_a_linked_directory_stays_inside(tree: Path, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), tree / "opt")
    GuestRoot(tree).write_text("/opt/file", "x")
    assert not (outside / "file").exists()
    assert (tree / outside.relative_to("/") / "file").read_text() == "x"


def test_replacing_follows_links_only_inside(tree: Path, host_file: Path):
    os.symlink(str(host_file), tree / "etc/chrony.conf")
    with pytest.raises(FileNotFoundError):
        GuestRoot(tree).replace_text("/etc/chrony.conf", "more\n")
    assert host_file.read_text() == "host content\n"


def test_remove_deletes_the_link_not_its_target(tree: Path, tmp_path: Path):
    outside = tmp_path / "keep"
    outside.mkdir()
    (outside / "f").write_text("keep")
    os.symlink(str(outside), tree / "etc/doc")
    GuestRoot(tree).remove("/etc/doc")
    assert (outside / "f").read_text() == "keep" and not os.path.lexists(tree / "etc/doc")


@pytest.mark.parametrize("path", ["/", "/etc", "/usr", "/usr/lib", "/var/lib", "/proc/self", "/home"])
def test_system_directories_are_refused_as_outputs(path: str):
    with pytest.raises(UserError, match="refusing to write to system directory"):
        check_output_path(Path(path))


def test_an_ordinary_directory_is_accepted(tmp_path: Path):
    assert check_output_path(tmp_path / "out") == tmp_path / "out"


def test_fill_holes_in_tree_writes_sparse_files_out_and_keeps_the_rest(tmp_path):
    """What mmdebstrap writes in place must pack like the same tree unpacked from a tarball,
    which has no holes: sparse files are written out with their mtimes kept; links are not
    followed out of the tree."""
    import os

    from osbuilder.foundation.fsutil import fill_holes_in_tree

    outside = tmp_path / "outside"
    with open(outside, "wb") as f:
        f.truncate(1 << 20)
    root = tmp_path / "root"
    (root / "var" / "log").mkdir(parents=True)
    sparse = root / "var" / "log" / "lastlog"
    with open(sparse, "wb") as f:
        f.seek(1 << 20)
        f.write(b"end")
    os.utime(sparse, (1700000000, 1700000000))
    (root / "plain").write_bytes(b"x" * 5000)
    (root / "link").symlink_to(outside)
    assert sparse.stat().st_blocks * 512 < sparse.stat().st_size
    fill_holes_in_tree(root)
    assert sparse.stat().st_blocks * 512 >= sparse.stat().st_size
    assert sparse.read_bytes() == b"\0" * (1 << 20) + b"end"
    assert sparse.stat().st_mtime == 1700000000
    assert (root / "plain").read_bytes() == b"x" * 5000
    assert outside.stat().st_blocks * 512 < 1 << 20  # untouched


def test_write_atomically_replaces_whole_and_leaves_nothing_on_failure(tmp_path: Path):
    from osbuilder.foundation.fsutil import write_atomically

    target = tmp_path / "summary.json"
    target.write_bytes(b"old")
    write_atomically(target, b"new")
    assert target.read_bytes() == b"new"
    (tmp_path / "blocker").mkdir()  # a directory where the file should go: the rename fails
    with pytest.raises(OSError):
        write_atomically(tmp_path / "blocker", b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "summary.json"]


def test_a_file_replaces_an_empty_directory_but_never_a_full_one(tree: Path):
    from osbuilder.foundation.errors import BuildError

    (tree / "etc/empty").mkdir()
    GuestRoot(tree).write_text("/etc/empty", "x")
    assert (tree / "etc/empty").read_text() == "x"
    (tree / "etc/full").mkdir()
    (tree / "etc/full/kept").write_text("k")
    with pytest.raises(BuildError, match="a directory with files in it is there"):
        GuestRoot(tree).write_text("/etc/full", "x")
    assert (tree / "etc/full/kept").read_text() == "k"
