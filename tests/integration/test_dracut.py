"""`--method dracut`: a guest made from this build host's own system by dracut, with the
agent files provisioned over it, in both init modes, booted under qemu."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from osbuilder.foundation.errors import UserError
from osbuilder.foundation.fsutil import GuestRoot
from osbuilder.rootfs.dracut import HostSystem, unpack_newc
from tests.conftest import run_cli
from tests.integration.booting import assert_probe, boot, pack


def dracut_rootfs(out: Path, init: str, *extra: str):
    return run_cli("rootfs", "--distro", "debian", "--init", init, "--method", "dracut", "--probe-agent",
                   "-o", out, "--json", *extra)


@pytest.mark.slow
@pytest.mark.parametrize("init", ["agent", "systemd"])
def test_a_dracut_guest_from_the_host_boots_in_both_init_modes(boot_cache, tmp_path, init):
    tree = tmp_path / "rootfs"
    result = dracut_rootfs(tree, init)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["distro"], report["release"], report["init_mode"]) == ("debian", HostSystem.read().release, init)
    summary = (tree / "var/lib/osbuilder/osbuilder.yaml").read_text()
    assert "default: []" in summary  # nothing was installed from the recipe's package set
    # The host's own binaries, reduced by dracut: the same bytes as the host's.
    assert (tree / "usr/bin/uname").read_bytes() == Path("/usr/bin/uname").read_bytes()
    assert (tree / "usr/lib/systemd/systemd").exists() == (init == "systemd")
    # dracut writes root with an empty password; osbuilder leaves it none that works.
    assert "root:*:0:0:" in (tree / "etc/passwd").read_text() and "root::" not in (tree / "etc/passwd").read_text()
    initrd = pack("initrd", tree, tmp_path / "initrd.img")
    result, boot_report = boot(initrd, boot_cache, "--host-cgroup-driver", "systemd")
    assert_probe(result, boot_report, tree, "systemd")


@pytest.mark.parametrize("flags, message", [
    (("--arch", "aarch64"), "--method dracut builds for this host's arch (x86_64), not aarch64; drop --arch, or "
                            "use --method distro for another arch"),
    (("--mirror", "http://x"), "--mirror does not apply to --method dracut (the host's system is used, nothing "
                               "is installed); drop --mirror"),
    (("--release", "trixie"), f"--method dracut builds this host's release ({HostSystem.read().release}), not "
                              "trixie; drop --release"),
])
def test_dracut_refuses_what_it_cannot_build(tmp_path, flags, message):
    result = dracut_rootfs(tmp_path / "out", "agent", *flags)
    assert result.returncode == 2
    assert result.error_lines == [f"osbuilder: error: {message}"]
    assert not (tmp_path / "out").exists()


def test_dracut_needs_the_hosts_distribution(tmp_path):
    result = run_cli("rootfs", "--distro", "ubuntu", "--init", "agent", "--method", "dracut", "--probe-agent",
                     "-o", tmp_path / "out")
    assert result.returncode == 2
    assert result.error_lines == ["osbuilder: error: --method dracut builds from this host's system, which is "
                                  "debian, not ubuntu; pass --distro debian"]


def newc(members: list[tuple[str, int, bytes]]) -> bytes:
    """A newc archive of (name, mode, data) members."""
    out = b""
    for ino, (name, mode, data) in enumerate(members + [("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        header = b"070701" + b"".join(b"%08X" % value for value in fields)
        out += header + encoded + b"\0" * (-(len(header) + len(encoded)) % 4) + data + b"\0" * (-len(data) % 4)
    return out


def test_unpacking_never_writes_through_a_link_out_of_the_tree(tmp_path):
    outside = tmp_path / "host"
    outside.mkdir()
    archive = tmp_path / "a.cpio"
    archive.write_bytes(newc([("etc", 0o40755, b""), ("etc/escape", 0o120777, str(outside).encode()),
                              ("etc/escape/planted", 0o100644, b"x"), ("usr/bin/tool", 0o100755, b"#!/bin/sh\n")]))
    tree = tmp_path / "tree"
    tree.mkdir()
    unpack_newc(archive, GuestRoot(tree), chown=True)
    assert list(outside.iterdir()) == []  # the link is resolved inside the guest
    assert (tree / str(outside).lstrip("/") / "planted").read_bytes() == b"x"
    assert os.access(tree / "usr/bin/tool", os.X_OK)
    archive.write_bytes(newc([("../up", 0o100644, b"x")]))
    with pytest.raises(UserError, match="has a '..' component"):
        unpack_newc(archive, GuestRoot(tree), chown=True)
    assert not (tmp_path / "up").exists()
