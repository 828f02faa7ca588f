"""`osbuilder image` on small guest trees: real mkfs, fsck and read-back, no mounts."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from osbuilder.pack.disk import MiB
from tests.conftest import REPO, run_cli
from tests.helpers import (assert_erofs_matches, assert_ext4_matches, erofs_modes, fsck_and_rdump_ext4,
                           make_minimal_guest,
                           partition_bytes, snapshot)
from tests.unit.test_cli_errors import assert_refused
from tests.unit.test_disk import sfdisk_partitions

pytestmark = pytest.mark.slow  # real mkfs, fsck, debugfs, veritysetup and xorriso


@pytest.fixture
def guest(tmp_path: Path, host_agent: Path) -> Path:
    root = make_minimal_guest(tmp_path / "guest", host_agent)
    os.mknod(root / "dev/sda", stat.S_IFBLK | 0o660, os.makedev(8, 0))
    os.mkfifo(root / "run-fifo", 0o600)
    os.link(root / "etc/chrony/chrony.conf", root / "etc/chrony-hardlink")
    (root / "setuid-tool").write_bytes(b"\x7fELF")
    os.chmod(root / "setuid-tool", 0o4755)
    (root / "dir with space").mkdir()
    (root / "dir with space/ünïcødé").write_text("x")
    return root


def special_paths(snap: dict) -> list[str]:
    return [p for p, v in snap.items() if stat.S_ISCHR(v[0]) or stat.S_ISBLK(v[0]) or stat.S_ISFIFO(v[0])]


def test_ext4_dax_image_reads_back_exactly(tmp_path: Path, guest: Path):
    before = snapshot(guest)
    image = tmp_path / "kata.img"
    result = run_cli("image", guest, "-o", image)
    assert result.returncode == 0, result.stderr
    assert snapshot(guest) == before, "the tree was modified"
    assert not (guest / "etc/machine-id").exists()
    assert image.stat().st_size % (128 * MiB) == 0
    assert sfdisk_partitions(image)[0].startswith("start=        6144,")
    fs, out = fsck_and_rdump_ext4(image, 3 * MiB, tmp_path)
    assert_ext4_matches(fs, out, before)
    machine_id = out / "etc/machine-id"
    assert machine_id.is_file() and machine_id.stat().st_size == 0
    specials = special_paths(before)
    assert "dev/console" in specials and "run-fifo" in specials


def test_erofs_image_reads_back_exactly(tmp_path: Path, guest: Path):
    before = snapshot(guest)
    image = tmp_path / "kata.img"
    result = run_cli("image", guest, "--fs", "erofs", "--no-dax", "-o", image)
    assert result.returncode == 0, result.stderr
    assert snapshot(guest) == before
    assert sfdisk_partitions(image)[0].startswith("start=        2048,")
    fs = partition_bytes(image, tmp_path / "fs", MiB)
    out = tmp_path / "extracted"
    subprocess.run(["fsck.erofs", f"--extract={out}", str(fs)], check=True, capture_output=True)
    assert_erofs_matches(fs, out, before)
    assert (out / "etc/machine-id").stat().st_size == 0


@pytest.mark.parametrize("fs_args", [[], ["--no-dax"], ["--fs", "erofs"]], ids=["ext4-dax", "ext4", "erofs"])
def test_two_builds_are_bit_identical(tmp_path: Path, guest: Path, fs_args: list[str]):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert run_cli("image", guest, *fs_args, "-o", tmp_path / "a/one.img").returncode == 0
    # Reading and chmod change atime and ctime: host-side noise that must not leak in.
    conf = guest / "etc/chrony/chrony.conf"
    st = conf.stat()
    os.utime(conf, ns=(st.st_atime_ns + 10**9, st.st_mtime_ns))
    os.chmod(conf, stat.S_IMODE(st.st_mode))
    assert run_cli("image", guest, *fs_args, "-o", tmp_path / "b/two.img").returncode == 0
    assert (tmp_path / "a/one.img").read_bytes() == (tmp_path / "b/two.img").read_bytes()


def _copy_in_order(source: Path, target: Path, reverse: bool) -> None:
    """`source` copied by tar with its entries made in sorted or reverse-sorted order."""
    names = sorted(subprocess.run(["find", ".", "-mindepth", "1"], cwd=source, capture_output=True, text=True,
                                  check=True).stdout.splitlines(), reverse=reverse)
    target.mkdir()
    subprocess.run(f"tar -C {source} --no-recursion -T - -cf - | tar -C {target} -xpf -", shell=True, check=True,
                   input="\n".join(names), text=True)
    os.utime(target, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns))


@pytest.mark.parametrize("fs_args", [[], ["--fs", "erofs"], ["--fs", "xfs"]], ids=["ext4", "erofs", "xfs"])
def test_packing_does_not_depend_on_the_hosts_directory_order(tmp_path: Path, guest: Path, fs_args: list[str]):
    """The same tree listed in two orders packs to the same bytes, so a tree a package manager
    wrote in place needs no reordering. tmpfs lists entries in reverse order of creation."""
    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        forward, backward = Path(shm) / "forward", Path(shm) / "backward"
        _copy_in_order(guest, forward, reverse=False)
        _copy_in_order(guest, backward, reverse=True)
        if "xfs" in fs_args:  # protofiles cannot name it
            for tree in (forward, backward):
                shutil.rmtree(tree / "dir with space")
        listed = [os.listdir(tree / "etc") for tree in (forward, backward)]
        assert listed[0] != listed[1] and sorted(listed[0]) == sorted(listed[1])
        images = []
        for tree in (forward, backward):
            images.append(tmp_path / f"{tree.name}.img")
            result = run_cli("image", tree, *fs_args, "-o", images[-1])
            assert result.returncode == 0, result.stderr
    assert images[0].read_bytes() == images[1].read_bytes()


def test_ext4_clamps_mtimes_newer_than_the_epoch(tmp_path: Path, guest: Path):
    """The fixture's files were made now, after its epoch: the image holds the epoch for them
    (as the initrd's cpio does), never the host's clock, so when the tree was touched does
    not change the bytes."""
    epoch = 1700000000  # make_minimal_guest's
    assert any(p.lstat().st_mtime > epoch for p in guest.rglob("*"))
    image = tmp_path / "kata.img"
    assert run_cli("image", guest, "--no-dax", "-o", image).returncode == 0
    fs = partition_bytes(image, tmp_path / "fs", MiB)
    header = subprocess.run(["dumpe2fs", "-h", str(fs)], capture_output=True, text=True, check=True).stdout
    count = int(re.search(r"^Inode count:\s+(\d+)", header, re.M).group(1))
    script = tmp_path / "stat.cmds"
    script.write_text("".join(f"stat <{i}>\n" for i in range(1, count + 1)))
    out = subprocess.run(["debugfs", "-f", str(script), str(fs)], capture_output=True, text=True, check=True).stdout
    mtimes = [int(m, 16) for m in re.findall(r"mtime: 0x([0-9a-f]+)", out)]
    assert len(mtimes) == count and max(mtimes) == epoch


def test_free_space_and_alignment(tmp_path: Path, guest: Path):
    image = tmp_path / "kata.img"
    assert run_cli("image", guest, "--no-dax", "--free-space", "40", "-o", image).returncode == 0
    fs = partition_bytes(image, tmp_path / "fs", MiB)
    out = subprocess.run(["dumpe2fs", "-h", str(fs)], capture_output=True, text=True, check=True).stdout
    free_blocks = int(next(l for l in out.splitlines() if l.startswith("Free blocks:")).split()[-1])
    reserved = int(next(l for l in out.splitlines() if l.startswith("Reserved block count:")).split()[-1])
    assert (free_blocks - reserved) * 4096 >= 40 * MiB
    aligned = tmp_path / "aligned.img"
    assert run_cli("image", guest, "--align", "64", "-o", aligned).returncode == 0
    assert aligned.stat().st_size % (64 * MiB) == 0


def _empty(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize("args,message", [
    (["--fs", "btrfs"], "invalid choice"),
    (["--fs", "erofs", "--block-size", "2048", "--no-dax"], "--block-size 2048 is not supported with erofs"),
    (["--free-space", "-5"], "--free-space -5 is negative"),
    (["--block-size", "2048"], "DAX image needs 4096-byte blocks"),
])
def test_bad_options(tmp_path: Path, guest: Path, args: list[str], message: str):
    out = _empty(tmp_path / "out")
    assert_refused(run_cli("image", guest, *args, "-o", out / "i.img"), message, out)


def test_missing_output_directory(tmp_path: Path, guest: Path):
    out = _empty(tmp_path / "out")
    assert_refused(run_cli("image", guest, "-o", out / "nope" / "i.img"), "does not exist", out)


def test_unwritable_output_directory(tmp_path: Path):
    locked = Path("/var/tmp") / f"osbuilder-locked-{os.getpid()}"
    locked.mkdir(mode=0o755)
    try:
        result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                                 "-m", "osbuilder", "image", "/", "-o", str(locked / "i.img")],
                                capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 2 and "cannot write to" in result.stderr, result.stderr
        assert list(locked.iterdir()) == []
    finally:
        locked.rmdir()


@pytest.mark.parametrize("fs", ["ext4", "erofs"])
def test_verity_partitions_verify_and_catch_a_flipped_byte(tmp_path: Path, guest: Path, fs: str):
    image = tmp_path / "kata.img"
    result = run_cli("image", guest, "--fs", fs, "--verity", "-o", image)
    assert result.returncode == 0, result.stderr
    params = (tmp_path / "root_hash_base.txt").read_text().strip()
    fields = dict(item.split("=") for item in params.split(","))
    assert set(fields) == {"root_hash", "salt", "data_blocks", "data_block_size", "hash_block_size"}
    starts = [int(p.split("start=")[1].split(",")[0]) * 512 for p in sfdisk_partitions(image)]
    sizes = [int(p.split("size=")[1].split(",")[0]) * 512 for p in sfdisk_partitions(image)]
    assert "bootable" in sfdisk_partitions(image)[0] and starts[0] == 3 * MiB
    assert sizes[0] == int(fields["data_blocks"]) * 4096
    data = partition_bytes(image, tmp_path / "data", starts[0], sizes[0])
    hashes = partition_bytes(image, tmp_path / "hash", starts[1], sizes[1])
    verify = ["veritysetup", "verify", "--no-superblock", f"--salt={fields['salt']}",
              str(data), str(hashes), fields["root_hash"]]
    subprocess.run(verify, check=True, capture_output=True)
    with open(data, "r+b") as f:
        f.seek(sizes[0] // 2)
        byte = f.read(1)
        f.seek(sizes[0] // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert subprocess.run(verify, capture_output=True).returncode != 0


@pytest.fixture
def plain_guest(tmp_path: Path, host_agent: Path) -> Path:
    root = make_minimal_guest(tmp_path / "plain", host_agent)
    os.chmod(root / "tmp", 0o1777)
    os.mkfifo(root / "run-fifo", 0o600)
    return root


def xfs_db(fs: Path, *commands: str) -> str:
    args = ["xfs_db", "-r"]
    for command in commands:
        args += ["-c", command]
    return subprocess.run(args + [str(fs)], capture_output=True, text=True, check=True).stdout


def test_xfs_image_is_clean_reproducible_and_keeps_modes(tmp_path: Path, plain_guest: Path):
    before = snapshot(plain_guest)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for out in ("a/one.img", "b/two.img"):
        result = run_cli("image", plain_guest, "--fs", "xfs", "-o", tmp_path / out)
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "a/one.img").read_bytes() == (tmp_path / "b/two.img").read_bytes()
    assert snapshot(plain_guest) == before
    fs = partition_bytes(tmp_path / "a/one.img", tmp_path / "fs", 3 * MiB)
    subprocess.run(["xfs_repair", "-n", str(fs)], check=True, capture_output=True)
    version = xfs_db(fs, "version")
    assert "V5" in version and "REFLINK" not in version, version  # DAX and reflink exclude each other
    assert "core.mode = 041777" in xfs_db(fs, "path /tmp", "inode", "print core.mode")
    assert "core.mode = 020666" in xfs_db(fs, "path /dev/null", "inode", "print core.mode")
    assert "core.size = 0" in xfs_db(fs, "path /etc/machine-id", "inode", "print core.size")
    init = xfs_db(fs, "path /usr/sbin/init", "inode", "print core.size core.mode")
    assert f"core.size = {(plain_guest / 'usr/sbin/init').stat().st_size}" in init and "0100755" in init
    listing = xfs_db(fs, "path /etc", "ls")
    assert "resolv.conf" in listing and "chrony" in listing


def test_xfs_refuses_names_with_spaces_with_a_hint(tmp_path: Path, guest: Path):
    out = _empty(tmp_path / "out")
    assert_refused(run_cli("image", guest, "--fs", "xfs", "-o", out / "i.img"), "protofiles split names at spaces", out)


@pytest.mark.parametrize("command", [["image", "--fs", "ext4"], ["image", "--fs", "xfs"], ["iso"], ["initrd"]],
                         ids=["ext4", "xfs", "iso", "initrd"])
def test_packs_as_a_non_root_user_with_true_owners(command: list[str], host_agent: Path):
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="osbuilder-nonroot-"))
    try:
        os.chmod(base, 0o755)
        tree = make_minimal_guest(base / "guest", host_agent)
        os.chown(tree / "etc/chrony/chrony.conf", 0, 42)
        out = base / "out"
        out.mkdir(mode=0o777)
        os.chmod(out, 0o777)
        as_root = run_cli(*command, tree, "-o", out / "root.bin")
        assert as_root.returncode == 0, as_root.stderr
        as_nobody = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                                    "-m", "osbuilder", *command, str(tree), "-o", str(out / "nobody.bin")],
                                   capture_output=True, text=True, cwd=REPO)
        assert as_nobody.returncode == 0, as_nobody.stderr
        assert (out / "nobody.bin").stat().st_uid == 65534
        assert (out / "root.bin").read_bytes() == (out / "nobody.bin").read_bytes()
        assert sorted(p.name for p in out.iterdir()) == ["nobody.bin", "root.bin"]
    finally:
        shutil.rmtree(base)


# VFS_CAP_REVISION_2 with cap_net_raw permitted and effective.
FILE_CAP_NET_RAW = bytes.fromhex("0100000200200000000000000000000000000000")
# POSIX ACL v2 for a directory: user::rwx, user:42:r-x, group::r-x, mask::r-x, other::r-x.
ACL_USER_42_READ = bytes.fromhex("02000000" "01000700ffffffff" "020005002a000000" "04000500ffffffff"
                                 "10000500ffffffff" "20000500ffffffff")


def test_erofs_as_non_root_adds_machine_id_with_true_owners_devices_and_xattrs(host_agent: Path):
    """mkfs.erofs cannot add the empty machine-id, so a copy is packed; as a non-root user that
    copy is made under fakeroot. It must give the same bytes as root's."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="osbuilder-nonroot-"))
    try:
        os.chmod(base, 0o755)
        tree = make_minimal_guest(base / "guest", host_agent)
        (tree / "etc/machine-id").unlink(missing_ok=True)
        os.mknod(tree / "dev/ttyS9", 0o600 | stat.S_IFCHR, os.makedev(4, 73))
        tool = tree / "usr/bin/pinger"
        tool.write_bytes(b"ping")
        os.chown(tool, 0, 42)
        os.chmod(tool, 0o4755)
        os.link(tool, tree / "usr/bin/pinger6")
        before = snapshot(tree)
        out = base / "out"
        out.mkdir()
        os.chmod(out, 0o777)
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "osbuilder",
                   "image", str(tree), "--fs", "erofs", "--no-dax", "-o", str(out / "nobody.img")]
        as_nobody = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        assert as_nobody.returncode == 0, as_nobody.stderr
        assert run_cli("image", tree, "--fs", "erofs", "--no-dax", "-o", out / "root.img").returncode == 0
        assert (out / "nobody.img").read_bytes() == (out / "root.img").read_bytes()
        assert snapshot(tree) == before and not (tree / "etc/machine-id").exists()
        assert sorted(p.name for p in out.iterdir()) == ["nobody.img", "root.img"]
        fs = partition_bytes(out / "nobody.img", base / "fs", MiB)
        dump = lambda path: subprocess.run(["dump.erofs", f"--path={path}", str(fs)],  # noqa: E731
                                           capture_output=True, text=True, check=True).stdout
        assert re.search(r"Size: 0\b", dump("/etc/machine-id"))
        assert re.search(r"Uid: 0\s+Gid: 0", dump("/etc/machine-id"))
        assert re.search(r"Uid: 0\s+Gid: 42", dump("/usr/bin/pinger"))
        assert re.search(r"NID: (\d+)", dump("/usr/bin/pinger"))[1] == re.search(r"NID: (\d+)", dump("/usr/bin/pinger6"))[1]
        assert erofs_modes(fs, ["usr/bin/pinger", "dev/ttyS9"]) == {
            "usr/bin/pinger": stat.S_IFREG | 0o4755, "dev/ttyS9": stat.S_IFCHR | 0o600}

        # xattrs of every namespace a guest uses travel too, as non-root: a file capability,
        # a user xattr on a hard-linked file, an ACL on a directory, an SELinux label on a device node.
        os.setxattr(tool, "user.note", b"kept")
        (tree / "usr/bin/arping").write_bytes(b"arping")
        os.setxattr(tree / "usr/bin/arping", "security.capability", FILE_CAP_NET_RAW)
        os.setxattr(tree / "etc", "system.posix_acl_access", ACL_USER_42_READ)
        os.setxattr(tree / "dev/ttyS9", "security.selinux", b"system_u:object_r:tty_device_t:s0")
        before = snapshot(tree)
        (out / "nobody.img").unlink()
        as_nobody = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        assert as_nobody.returncode == 0, as_nobody.stderr
        assert run_cli("image", tree, "--fs", "erofs", "--no-dax", "--force", "-o", out / "root.img").returncode == 0
        assert (out / "nobody.img").read_bytes() == (out / "root.img").read_bytes()
        assert snapshot(tree) == before
        fs = partition_bytes(out / "nobody.img", base / "fs2", MiB)
        # fsck.erofs 1.5 does not extract xattrs; the inode's xattr area holds name and value.
        for path in ("/usr/bin/pinger", "/usr/bin/pinger6", "/usr/bin/arping", "/etc", "/dev/ttyS9"):
            assert not re.search(r"Xattr size: 0\b", dump(path)), path
        assert re.search(r"Xattr size: 0\b", dump("/etc/machine-id"))
        image = fs.read_bytes()
        assert all(value in image for value in (b"kept", FILE_CAP_NET_RAW, ACL_USER_42_READ, b"tty_device_t"))
        assert erofs_modes(fs, ["usr/bin/pinger", "dev/ttyS9"]) == {
            "usr/bin/pinger": stat.S_IFREG | 0o4755, "dev/ttyS9": stat.S_IFCHR | 0o600}
    finally:
        shutil.rmtree(base)
