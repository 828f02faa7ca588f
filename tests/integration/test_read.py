"""Reading artifacts back: every format osbuilder writes is recognised from its bytes and
gives back the guest's osbuilder.yaml, without mounting and without root."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from osbuilder.foundation.errors import UserError
from osbuilder.foundation.guest_layout import SUMMARY_PATH
from osbuilder.read.kind import recognise_artifact
from osbuilder.read.summary import read_artifact_summary
from osbuilder.rootfs.summary import parse_summary
from osbuilder.foundation.runner import Runner
from tests.conftest import run_cli
from tests.helpers import make_minimal_guest

pytestmark = pytest.mark.slow  # real mkfs, fsck, debugfs, veritysetup and xorriso


@pytest.fixture(scope="module")
def guest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("read") / "guest"
    return make_minimal_guest(root, Path("/bin/busybox"), "systemd")


CASES = {
    "initrd-gzip": (["initrd"], "initrd", None),
    "initrd-zstd": (["initrd", "--compression", "zstd"], "initrd", None),
    "initrd-none": (["initrd", "--compression", "none"], "initrd", None),
    "ext4-dax": (["image", "--fs", "ext4"], "image", "ext4"),
    "ext4-verity": (["image", "--fs", "ext4", "--no-dax", "--verity"], "image", "ext4"),
    "xfs": (["image", "--fs", "xfs", "--no-dax"], "image", "xfs"),
    "erofs-dax": (["image", "--fs", "erofs"], "image", "erofs"),
    "iso": (["iso"], "iso", "iso9660"),
}


@pytest.mark.parametrize("case", CASES)
def test_every_format_gives_back_its_summary(guest: Path, tmp_path: Path, case: str):
    args, kind, fs = CASES[case]
    artifact = tmp_path / "artifact"
    packed = run_cli(*args, guest, "-o", artifact)
    assert packed.returncode == 0, packed.stderr
    info = recognise_artifact(artifact)
    assert (info.kind, info.fs) == (kind, fs)
    assert info.verity == ("--verity" in args) and info.dax == (kind == "image" and "--no-dax" not in args)
    work = tmp_path / "work"
    work.mkdir()
    expected = parse_summary((guest / SUMMARY_PATH.lstrip("/")).read_text())
    assert read_artifact_summary(info, work, Runner()) == expected
    assert list(work.iterdir()) == [], "the reader left scratch files behind"


def test_a_rootfs_directory_is_read_in_place(guest: Path, tmp_path: Path):
    info = recognise_artifact(guest)
    assert info.kind == "rootfs"
    assert read_artifact_summary(info, tmp_path, Runner())["agent"]["init-mode"] == "systemd"


def test_an_artifact_without_a_summary_reads_as_none(guest: Path, tmp_path: Path):
    (guest / SUMMARY_PATH.lstrip("/")).rename(tmp_path / "kept.yaml")
    try:
        for args in (["initrd", "--init", "systemd"], ["image", "--init", "systemd", "--no-dax"],
                     ["image", "--init", "systemd", "--fs", "xfs", "--no-dax"]):
            artifact = tmp_path / "artifact"
            assert run_cli(*args, guest, "--arch", "x86_64", "--force", "-o", artifact).returncode == 0
            assert read_artifact_summary(recognise_artifact(artifact), tmp_path, Runner()) is None
    finally:
        (tmp_path / "kept.yaml").rename(guest / SUMMARY_PATH.lstrip("/"))


def test_a_truncated_image_and_a_garbage_initrd_are_refused(guest: Path, tmp_path: Path):
    image = tmp_path / "kata.img"
    assert run_cli("image", guest, "-o", image).returncode == 0
    with open(image, "r+b") as f:
        f.truncate(image.stat().st_size // 2)
    with pytest.raises(UserError, match="is truncated"):
        recognise_artifact(image)
    garbage = tmp_path / "garbage.img"
    garbage.write_bytes(b"\x1f\x8b" + b"not gzip at all" * 10)
    with pytest.raises(UserError) as err:  # unreadable input: exit 2, as every reader's
        read_artifact_summary(recognise_artifact(garbage), tmp_path, Runner())
    assert "garbage.img" in str(err.value)


@pytest.mark.parametrize("case", CASES)
def test_every_format_gives_a_view_of_the_guest_tree(guest: Path, tmp_path: Path, case: str):
    """Symlinks resolved inside the guest, directories listed, binary files read whole."""
    from osbuilder.foundation.fsutil import sha256_file
    from osbuilder.read.summary import open_view

    args, _, _ = CASES[case]
    artifact = tmp_path / "artifact"
    assert run_cli(*args, guest, "-o", artifact).returncode == 0
    work = tmp_path / "work"
    work.mkdir()
    with open_view(recognise_artifact(artifact), work, Runner()) as view:
        assert view.lstat("/sbin/init").kind == "symlink"
        assert view.resolve("/sbin/init") == "/usr/lib/systemd/systemd"  # /sbin -> usr/sbin, init -> /lib/...
        assert view.resolve("/sbin/init") == view.resolve("/usr/lib/systemd/systemd")
        agent = view.read_file("/usr/bin/kata-agent")
        assert agent is not None and hashlib.sha256(agent).hexdigest() == sha256_file(Path("/bin/busybox"))
        assert "dbus.socket" in view.listdir("/etc/systemd/system/kata-containers.target.wants")
        assert view.stat("/usr/bin").kind == "dir" and view.lstat("/no/such/file") is None
        assert view.read_file("/usr/bin") is None
    assert list(work.iterdir()) == [], "the view left scratch files behind"
