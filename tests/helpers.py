"""Test helpers: snapshots of trees for exact comparison, and a small valid guest tree."""

from __future__ import annotations

import dataclasses

import hashlib
import os
import shutil
import stat
from pathlib import Path

CHRONY_UNIT = """[Service]
ExecStart=!/usr/sbin/chronyd -u _chrony $DAEMON_OPTS
ReadWritePaths=/run
StateDirectory=chrony
"""


def snapshot(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Every path under root -> (type, mode, uid, gid, payload). Payload is the content's
    sha256, a link's target or a device's numbers, so two snapshots are equal exactly when
    the trees are."""
    result: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            if rel in skip:
                continue
            st = path.lstat()
            kind = stat.S_IFMT(st.st_mode)
            if stat.S_ISREG(st.st_mode):
                payload: object = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                payload = os.readlink(path)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                payload = (os.major(st.st_rdev), os.minor(st.st_rdev))
            else:
                payload = None
            result[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, payload)
    return result


def hardlink_groups(root: Path) -> list[list[str]]:
    groups: dict[tuple[int, int], list[str]] = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                groups.setdefault((st.st_dev, st.st_ino), []).append(str(path.relative_to(root)))
    return sorted(sorted(g) for g in groups.values())


def fake_bootstrap(root: Path, with_systemd: bool) -> None:
    """The shape of a Debian bootstrap, in a few files: enough for provisioning to act on."""
    for d in ("usr/bin", "usr/sbin", "usr/lib/systemd/system", "etc/chrony", "var/lib/dpkg", "var/cache/apt",
              "var/log", "var/tmp", "usr/share/doc/x", "dev", "tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")):
        os.symlink(target, root / link)
    (root / "etc/chrony/chrony.conf").write_text("pool 2.debian.pool.ntp.org iburst\nserver a\nkeyfile x\n")
    (root / "usr/lib/systemd/system/chrony.service").write_text(CHRONY_UNIT)
    (root / "usr/lib/systemd/system/dbus.socket").write_text("[Socket]\n")
    (root / "usr/lib/systemd/system/basic.target").write_text("[Unit]\n")
    (root / "etc/resolv.conf").write_text("nameserver 192.0.2.1\n")
    if with_systemd:
        (root / "usr/lib/systemd/systemd").write_bytes(b"\x7fELF-not-really")
        os.symlink("/lib/systemd/systemd", root / "usr/sbin/init")
        # What a systemd base's extension mount runs: a shell (Debian's dash) and veritysetup.
        shutil.copy("/bin/busybox", root / "usr/bin/sh")
        (root / "usr/sbin/veritysetup").write_bytes(b"\x7fELF-not-really")
        (root / "usr/sbin/veritysetup").chmod(0o755)


def make_minimal_guest(root: Path, agent: Path, init_mode: str = "agent", epoch: int | None = 1700000000,
                       arch: str = "x86_64") -> Path:
    """A small but valid guest tree, provisioned by the real provisioning code."""
    from osbuilder.rootfs.agent import check_agent
    from osbuilder.foundation.arch import get_arch
    from osbuilder.config import make_rootfs_options
    from osbuilder.foundation.fsutil import GuestRoot
    from osbuilder.rootfs.provision import Provisioner
    from osbuilder.foundation.templates import Templates
    from osbuilder.rootfs.validate import validate_tree

    fake_bootstrap(root, with_systemd=init_mode == "systemd")
    config, recipe = make_rootfs_options({"distro": "debian", "init": init_mode, "agent": agent, "arch": arch})
    config = dataclasses.replace(config, source_date_epoch=epoch)
    binary = check_agent(agent, get_arch(arch))
    Provisioner(GuestRoot(root), config, recipe, binary, Templates()).run()
    validate_tree(GuestRoot(root), init_mode, get_arch(arch), binary)
    return root


NEWC_FIELDS = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize", "devmajor", "devminor",
               "rdevmajor", "rdevminor", "namesize", "check")


def read_newc(data: bytes) -> list[dict]:
    """An independent newc reader: every member's header fields and name, trailer excluded."""
    members, offset = [], 0
    while True:
        assert data[offset:offset + 6] == b"070701", f"bad magic at {offset}"
        fields = {k: int(data[offset + 6 + 8 * i: offset + 14 + 8 * i], 16) for i, k in enumerate(NEWC_FIELDS)}
        name_start = offset + 110
        name = data[name_start:name_start + fields["namesize"] - 1].decode()
        offset = (name_start + fields["namesize"] + 3) & ~3
        offset = (offset + fields["filesize"] + 3) & ~3
        if name == "TRAILER!!!":
            return members
        members.append({"name": name, **fields})


def partition_bytes(image: Path, dest: Path, offset: int, length: int | None = None) -> Path:
    """Copy one partition out of a disk image into its own file."""
    import subprocess

    count = [] if length is None else [f"count={length}"]
    subprocess.run(["dd", f"if={image}", f"of={dest}", "bs=1M", f"skip={offset}", "iflag=skip_bytes,count_bytes",
                    *count, "conv=sparse", "status=none"], check=True)
    return dest


def ext4_special_files(fs_image: Path, paths: list[str]) -> dict[str, tuple]:
    """(type, mode, uid, gid, (major, minor)) of device nodes and fifos, read with debugfs."""
    import re
    import subprocess

    found = {}
    for path in paths:
        out = subprocess.run(["debugfs", "-R", f'stat "/{path}"', str(fs_image)], capture_output=True,
                             text=True, check=True).stdout
        mode = int(re.search(r"Mode:\s+(\d+)", out).group(1), 8)
        uid = int(re.search(r"User:\s+(\d+)", out).group(1))
        gid = int(re.search(r"Group:\s+(\d+)", out).group(1))
        kind = re.search(r"Type: ([\w ]+?)\s{2,}", out).group(1)
        dev = re.search(r"Device major/minor number: (\d+):(\d+)", out)
        found[path] = (kind, mode, uid, gid, (int(dev.group(1)), int(dev.group(2))) if dev else None)
    return found


SPECIAL_BITS = 0o7000


def without_special_bits(snap: dict[str, tuple]) -> dict[str, tuple]:
    """debugfs rdump chowns after chmod, which clears setuid/setgid: compare those apart."""
    return {p: (v[0], v[1] & ~SPECIAL_BITS) + v[2:] for p, v in snap.items()}


def assert_ext4_matches(fs_image: Path, rdump_dir: Path, tree_snapshot: dict[str, tuple]) -> None:
    """An ext4 filesystem holds exactly the tree: rdump for content, debugfs stat for what
    rdump cannot restore (device nodes, fifos, setuid/setgid/sticky bits)."""
    import stat as st

    def special(v: tuple) -> bool:
        return st.S_ISCHR(v[0]) or st.S_ISBLK(v[0]) or st.S_ISFIFO(v[0])

    specials = [p for p, v in tree_snapshot.items() if special(v)]
    expected = {p: v for p, v in tree_snapshot.items() if p not in specials and p != "etc/machine-id"}
    got = snapshot(rdump_dir, skip=("lost+found", "etc/machine-id"))
    assert without_special_bits(got) == without_special_bits(expected)
    words = {st.S_IFCHR: "character special", st.S_IFBLK: "block special", st.S_IFIFO: "FIFO"}
    assert ext4_special_files(fs_image, specials) == {
        p: (words[tree_snapshot[p][0]],) + tree_snapshot[p][1:] for p in specials}
    with_bits = [p for p, v in expected.items() if v[1] & SPECIAL_BITS and not st.S_ISLNK(v[0])]
    modes = ext4_special_files(fs_image, with_bits)
    assert {p: modes[p][1] for p in with_bits} == {p: expected[p][1] for p in with_bits}


def erofs_modes(fs_image: Path, paths: list[str]) -> dict[str, int]:
    """Full st_mode of erofs inodes, read from the on-disk inode (dump.erofs prints only the
    permission bits and fsck.erofs --extract drops setuid/setgid)."""
    import re
    import struct
    import subprocess

    data = fs_image.read_bytes()
    meta_blkaddr = struct.unpack_from("<I", data, 1024 + 40)[0]
    modes = {}
    for path in paths:
        out = subprocess.run(["dump.erofs", f"--path=/{path}", str(fs_image)], capture_output=True, text=True,
                             check=True).stdout
        nid = int(re.search(r"NID: (\d+)", out).group(1))
        modes[path] = struct.unpack_from("<H", data, meta_blkaddr * 4096 + nid * 32 + 4)[0]
    return modes


def assert_erofs_matches(fs_image: Path, extracted: Path, tree_snapshot: dict[str, tuple]) -> None:
    import stat as st

    got = snapshot(extracted, skip=("etc/machine-id",))
    expected = {p: v for p, v in tree_snapshot.items() if p != "etc/machine-id"}
    assert without_special_bits(got) == without_special_bits(expected)
    with_bits = [p for p, v in tree_snapshot.items() if v[1] & SPECIAL_BITS and not st.S_ISLNK(v[0])]
    assert erofs_modes(fs_image, with_bits) == {p: tree_snapshot[p][0] | tree_snapshot[p][1] for p in with_bits}


def fsck_and_rdump_ext4(image: Path, offset: int, work: Path) -> tuple[Path, Path]:
    """Cut the ext4 partition out of `image`, require a clean e2fsck, and rdump it.
    Returns (partition file, rdump directory)."""
    import subprocess

    fs = partition_bytes(image, work / "fs", offset)
    subprocess.run(["e2fsck", "-fn", str(fs)], check=True, capture_output=True)
    out = work / "rdump"
    out.mkdir()
    subprocess.run(["debugfs", "-R", f"rdump / {out}", str(fs)], check=True, capture_output=True)
    return fs, out


def make_busybox_probe_guest(root: Path, arch: str, busybox: Path, init: str = "agent",
                             launcher: Path | None = None) -> Path:
    """A tiny guest: one busybox-static for `arch` and the probe agent where `init` puts the
    agent (/sbin/init, or started by `launcher`), provisioned by the real code. Enough to prove
    a machine boots; not a distribution."""
    from osbuilder.config import make_rootfs_options
    from osbuilder.foundation.fsutil import GuestRoot
    from osbuilder.rootfs.probe import render_probe
    from osbuilder.rootfs.provision import Provisioner
    from osbuilder.foundation.templates import Templates

    fake_bootstrap(root, with_systemd=False)
    for directory in ("proc", "sys"):
        (root / directory).mkdir()
    shutil.copy2(busybox, root / "usr/bin/busybox")
    for applet in ("sh", "mount", "cat", "stat", "uname", "mkdir", "rmdir", "sleep", "sync"):
        os.symlink("busybox", root / "usr/bin" / applet)
    values = {"distro": "debian", "init": init, "probe_agent": True, "arch": arch}
    if launcher is not None:
        values["launcher"] = launcher
    config, recipe = make_rootfs_options(values)
    config = dataclasses.replace(config, source_date_epoch=1700000000)
    probe = render_probe(Templates(), root.parent / f"{root.name}.probe")
    Provisioner(GuestRoot(root), config, recipe, probe, Templates()).run()
    return root


MANIFEST_SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "manifest.v1.schema.json"


def validate_manifest(path: Path) -> dict:
    """manifest.json, loaded and validated against its JSON Schema (every test that reads a
    manifest reads it through here)."""
    import json

    import jsonschema

    manifest = json.loads(Path(path).read_text())
    jsonschema.Draft202012Validator(json.loads(MANIFEST_SCHEMA.read_text())).validate(manifest)
    return manifest


class WatchedCommand:
    """An osbuilder command whose stderr is read line by line as it comes. wait_for(condition)
    returns as soon as the condition holds: it is checked on every new line, and every
    tenth of a second for conditions on files, until a deadline; never a fixed sleep."""

    RECHECK_SECONDS = 0.1

    def __init__(self, *args: str | os.PathLike[str], cwd: Path | None = None) -> None:
        import subprocess
        import sys
        import threading

        self.lines: list[str] = []
        self.ended = False
        self.changed = threading.Condition()
        self.proc = subprocess.Popen([sys.executable, "-m", "osbuilder", *map(str, args)], cwd=cwd,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.ended = True
            self.changed.notify_all()

    def wait_for(self, condition, timeout: float = 300) -> None:
        import time

        deadline = time.monotonic() + timeout
        with self.changed:
            while not condition(self.lines):
                assert not self.ended, "the command ended before the point waited for:\n" + "\n".join(self.lines)
                left = deadline - time.monotonic()
                assert left > 0, f"not reached within {timeout:g} s:\n" + "\n".join(self.lines)
                self.changed.wait(min(left, self.RECHECK_SECONDS))

    def interrupt(self, signum: int) -> str:
        self.proc.send_signal(signum)
        # Only the reader thread reads stderr: communicate() would race it for the last lines.
        self.proc.wait(timeout=120)
        self.reader.join(timeout=10)
        return "\n".join(self.lines)


def seen(text: str):
    """A wait_for condition: some line holds `text`."""
    return lambda lines: any(text in line for line in lines)
