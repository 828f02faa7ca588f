"""The boot harness's parts that need no VM: the probe line, PVH extraction, the console
watcher, artifact recognition, the probe agent in a provisioned tree, and bad input."""

from __future__ import annotations

import dataclasses
import gzip
import io
import lzma
import struct
import os
import subprocess
import time
from pathlib import Path

import pytest

from osbuilder.read.kind import recognise_artifact as inspect_artifact
from osbuilder.boot.kernel import extract_vmlinux, has_pvh_note, pvh_vmlinux
from osbuilder.foundation.errors import UserError
from osbuilder.rootfs.probe import parse_probe_line, render_probe
from osbuilder.pack.cpio import NewcWriter
from osbuilder.foundation.runner import Runner
from osbuilder.foundation.templates import Templates
from tests.conftest import run_cli
from tests.helpers import fake_bootstrap, validate_manifest
from tests.unit.test_cli_errors import assert_refused

LINE = ("OSBUILDER-PROBE pid=1 init_mode=true systemd=false cgroup=v1 host_cgroup_driver=systemd "
        "cgroup_driver=cgroupfs arch=x86_64")


# -- the probe line -----------------------------------------------------------------------
def test_probe_line_parses_into_typed_fields():
    assert parse_probe_line("[    3.1] noise " + LINE + "\r") == {
        "pid": 1, "init_mode": True, "systemd": False, "cgroup": "v1", "host_cgroup_driver": "systemd",
        "cgroup_driver": "cgroupfs", "arch": "x86_64"}


def test_the_probe_line_reports_the_memory_the_guest_uses():
    fields = parse_probe_line(LINE + " mem_used_kib=41236")
    assert fields is not None and fields["mem_used_kib"] == 41236
    assert "mem_used_kib" not in parse_probe_line(LINE)  # a probe from before it was reported
    assert "mem_used_kib" not in parse_probe_line(LINE + " mem_used_kib=lots")


def test_the_probe_computes_memory_used_from_meminfo(tmp_path: Path):
    """The probe's own arithmetic, run by sh on a meminfo of known figures."""
    script = render_probe(Templates(), tmp_path / "probe").path.read_text()
    start = script.index("mem_total=0")
    end = script.index("mem_used_kib=$((mem_total - mem_available))") + len("mem_used_kib=$((mem_total - mem_available))")
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:        1000000 kB\nMemFree:          900000 kB\nMemAvailable:     958764 kB\n")
    snippet = script[start:end].replace("/proc/meminfo", str(meminfo)) + "\necho $mem_used_kib\n"
    out = subprocess.run(["sh", "-c", snippet], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "41236"


def test_the_probe_reports_the_size_of_run_when_it_is_a_mount(tmp_path: Path):
    """A confidential guest's /run is half the memory: the probe measures it with statfs
    (here the host's /run), and reports 0 when /proc/mounts has no /run."""
    script = render_probe(Templates(), tmp_path / "probe").path.read_text()
    start = script.index("run_kib=0")
    end = script.index("run_kib=${run_kib:-0}") + len("run_kib=${run_kib:-0}")
    host = os.statvfs("/run")
    for mounts, expected in (("proc /proc proc rw 0 0\ntmpfs /run tmpfs rw,nosuid,nodev,mode=755 0 0\n",
                              str(host.f_blocks * host.f_bsize // 1024)), ("proc /proc proc rw 0 0\n", "0")):
        path = tmp_path / "mounts"
        path.write_text(mounts)
        snippet = script[start:end].replace("/proc/mounts", str(path)) + "\necho $run_kib\n"
        assert subprocess.run(["sh", "-c", snippet], capture_output=True, text=True, check=True).stdout.strip() == expected
    fields = parse_probe_line(LINE + " mem_used_kib=41236 run_kib=507264")
    assert fields is not None and fields["run_kib"] == 507264


@pytest.mark.parametrize("broken", [LINE.replace("cgroup=v1", "cgroup=v3"), LINE.replace("pid=1 ", ""),
                                    LINE.replace("cgroup_driver=cgroupfs", "cgroup_driver=maybe")])
def test_malformed_probe_lines_are_not_accepted(broken: str):
    assert parse_probe_line(broken) is None


def test_probe_and_shim_scripts_are_valid_shell(tmp_path: Path):
    probe = render_probe(Templates(), tmp_path / "probe")
    assert probe.probe and probe.path.read_text().startswith("#!/bin/sh\n")
    subprocess.run(["dash", "-n", str(probe.path)], check=True)
    shim = tmp_path / "init"
    shim.write_text(Templates().render("boot-shim-init.sh.j2", modules=["virtio.ko", "ext4.ko"],
                                       error_marker="X", device_wait_tenths=300))
    subprocess.run(["busybox", "sh", "-n", str(shim)], check=True)
    assert "insmod /lib/modules/virtio.ko" in shim.read_text()
    # The line format is exactly the one the pattern accepts.
    assert "pid=$pid init_mode=$init_mode systemd=$systemd cgroup=$cgroup host_cgroup_driver=" in probe.path.read_text()


# -- PVH extraction -----------------------------------------------------------------------
def elf_with_note(note_type: int) -> bytes:
    """A minimal ELF64 with one PT_NOTE segment holding a "Xen" note of `note_type`."""
    note = struct.pack("<III", 4, 4, note_type) + b"Xen\0" + struct.pack("<I", 0x1000000)
    phoff, phentsize = 64, 56
    note_offset = phoff + phentsize
    header = (b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0, phoff, 0, 0, 64,
                                                                    phentsize, 1, 64, 0, 0))
    program = struct.pack("<IIQQQQQQ", 4, 4, note_offset, 0, 0, len(note), len(note), 4)
    return header + program + note


def bzimage_around(vmlinux: bytes, setup_sects: int = 4) -> bytes:
    payload = lzma.compress(vmlinux, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, 0x20F)
    struct.pack_into("<II", setup, 0x248, 16, len(payload))
    return bytes(setup) + bytes(16) + payload + struct.pack("<I", len(vmlinux))


def test_vmlinux_is_extracted_from_a_bzimage_and_its_pvh_note_found(tmp_path: Path):
    vmlinux = elf_with_note(18)
    assert extract_vmlinux(bzimage_around(vmlinux)) == vmlinux
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(bzimage_around(vmlinux, setup_sects=27))
    extracted = pvh_vmlinux(kernel, tmp_path / "cache")
    assert extracted.read_bytes() == vmlinux and has_pvh_note(extracted)
    assert pvh_vmlinux(kernel, tmp_path / "cache") == extracted  # cached by the bzImage's digest


def test_a_kernel_without_pvh_is_refused_with_the_way_out(tmp_path: Path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(bzimage_around(elf_with_note(17)))
    with pytest.raises(UserError, match="no PVH entry") as caught:
        pvh_vmlinux(kernel, tmp_path / "cache")
    assert "--no-pvh" in caught.value.hint
    assert not (tmp_path / "cache" / "vmlinux").exists() or not any((tmp_path / "cache" / "vmlinux").iterdir())


# -- the console watcher ------------------------------------------------------------------
def test_watch_stops_at_the_line_and_kills_the_process():
    began = time.monotonic()
    watched = Runner().watch(["sh", "-c", "echo booting; echo READY; sleep 60"], lambda out: "READY" in out,
                             timeout=30)
    assert watched.outcome == "matched" and "booting" in watched.output
    assert watched.matched_after is not None and time.monotonic() - began < 15


def test_watch_reports_an_exit_and_never_waits_past_the_timeout():
    exited = Runner().watch(["sh", "-c", "echo bye"], lambda out: False, timeout=30)
    assert exited.outcome == "exited" and exited.output == "bye\n" and exited.returncode == 0
    began = time.monotonic()
    hung = Runner(kill_grace=0.5).watch(["sh", "-c", "trap '' TERM; echo stuck; sleep 60"], lambda out: False,
                                        timeout=1)
    assert hung.outcome == "timeout" and hung.output == "stuck\n"
    assert time.monotonic() - began < 1 + 0.5 + 5  # the timeout plus the SIGTERM grace before SIGKILL


# -- artifacts ----------------------------------------------------------------------------
def test_artifacts_are_recognised_by_content(tmp_path: Path):
    initrd = tmp_path / "any-name"
    archive = io.BytesIO()
    with NewcWriter(archive):
        pass  # just the trailer: a valid, empty initrd
    initrd.write_bytes(gzip.compress(archive.getvalue()))
    assert inspect_artifact(initrd).kind == "initrd"
    junk = tmp_path / "junk.img"
    junk.write_bytes(bytes(8192))
    with pytest.raises(UserError, match="neither an initrd, a disk image nor an ISO"):
        inspect_artifact(junk)


# -- the probe agent in a tree ------------------------------------------------------------
def test_probe_tree_validates_records_the_probe_and_packs(tmp_path: Path):
    from osbuilder.config import make_rootfs_options
    from osbuilder.foundation.fsutil import GuestRoot
    from osbuilder.foundation.guest_layout import INIT_PATH
    from osbuilder.rootfs.provision import Provisioner
    from osbuilder.foundation.guest_layout import SUMMARY_PATH
    from osbuilder.rootfs.summary import parse_summary
    from osbuilder.rootfs.validate import validate_tree
    from osbuilder.foundation.arch import get_arch

    for init in ("agent", "systemd"):
        root = tmp_path / init / "tree"
        fake_bootstrap(root, with_systemd=init == "systemd")
        if not (root / "usr/bin/sh").exists():  # a systemd tree has a real one (its extension mount runs it)
            (root / "usr/bin/sh").write_text("#!fake shell\n")
        config, recipe = make_rootfs_options({"distro": "debian", "init": init, "probe_agent": True, "arch": "x86_64",
                                      "output": tmp_path / "unused"})
        config = dataclasses.replace(config, source_date_epoch=1700000000)
        probe = render_probe(Templates(), tmp_path / init / "probe")
        Provisioner(GuestRoot(root), config, recipe, probe, Templates()).run()
        validate_tree(GuestRoot(root), init, get_arch("x86_64"), probe)
        validate_tree(GuestRoot(root), init, get_arch("x86_64"))  # from what the tree records
        agent = parse_summary((root / SUMMARY_PATH.lstrip("/")).read_text())["agent"]
        assert agent["probe"] == "yes" and agent["name"] == "osbuilder-probe" and agent["url"] == "osbuilder:probe"
        installed = root / (INIT_PATH if init == "agent" else "usr/bin/kata-agent").lstrip("/")
        assert installed.read_bytes() == probe.path.read_bytes()
        result = run_cli("initrd", root, "-o", tmp_path / init / "initrd.img")
        assert result.returncode == 0, result.stderr
        # A tampered probe is refused by the packers.
        installed.write_text("#!/bin/sh\necho not the probe\n")
        result = run_cli("initrd", root, "-o", tmp_path / init / "again.img")
        assert result.returncode == 2 and "is not the probe agent osbuilder installed" in result.stderr


def test_a_probe_tree_without_a_shell_is_refused(tmp_path: Path):
    from osbuilder.foundation.arch import get_arch
    from osbuilder.config import make_rootfs_options
    from osbuilder.foundation.errors import BuildError
    from osbuilder.foundation.fsutil import GuestRoot
    from osbuilder.rootfs.provision import Provisioner
    from osbuilder.rootfs.validate import validate_tree

    root = tmp_path / "tree"
    fake_bootstrap(root, with_systemd=False)
    config, recipe = make_rootfs_options({"distro": "debian", "init": "agent", "probe_agent": True, "arch": "x86_64",
                                  "output": tmp_path / "unused"})
    probe = render_probe(Templates(), tmp_path / "probe")
    Provisioner(GuestRoot(root), config, recipe, probe, Templates()).run()
    with pytest.raises(BuildError, match="no /bin/sh"):
        validate_tree(GuestRoot(root), "agent", get_arch("x86_64"), probe)


# -- bad input: exit 2, one line, nothing written -----------------------------------------
def boot_inputs(tmp_path: Path, kernel_bytes: bytes) -> tuple[Path, Path, Path]:
    """An initrd and a kernel file in one directory, and an empty one that must stay empty."""
    inputs, work = tmp_path / "in", tmp_path / "work"
    inputs.mkdir()
    work.mkdir()
    initrd = inputs / "initrd.img"
    archive = io.BytesIO()
    with NewcWriter(archive):
        pass  # just the trailer: a valid, empty initrd
    initrd.write_bytes(gzip.compress(archive.getvalue()))
    kernel = inputs / "vmlinuz"
    kernel.write_bytes(kernel_bytes)
    return initrd, kernel, work


def test_boot_bad_input_exits_2(tmp_path: Path):
    initrd, kernel, work = boot_inputs(tmp_path, b"not a kernel")
    inputs = initrd.parent
    cases = [
        (["boot", initrd, "--kernel", inputs / "missing-vmlinuz", "--accel", "tcg",
          "--console-log", work / "console.txt"], "kernel '"),
        (["boot", inputs / "missing.img", "--kernel", kernel], "artifact '"),
        (["boot", initrd, "--kernel", kernel, "--device", "nvdimm"], "--device applies to disk images"),
        (["boot", initrd, "--kernel", kernel, "--expect", "(unclosed"], "--expect is not a valid regular expression"),
        (["boot", initrd, "--kernel", kernel, "--timeout", "0"], "--timeout must be positive"),
        (["boot", initrd, "--kernel", kernel, "--accel", "warp"], "invalid choice"),
        (["boot", initrd, "--kernel", kernel, "--console-log", "/etc/console.txt"], "refusing to write"),
    ]
    for args, message in cases:
        assert_refused(run_cli(*args), message, work)


def test_agent_and_probe_agent_exclude_each_other(tmp_path: Path, host_agent: Path):
    both = run_cli("rootfs", "--distro", "debian", "--init", "agent", "--agent", host_agent, "--probe-agent",
                   "-o", tmp_path / "out")
    assert_refused(both, "--agent and --probe-agent exclude each other", tmp_path)
    neither = run_cli("build", "--distro", "debian", "--init", "agent", "-o", tmp_path / "out")
    assert_refused(neither, "no agent given; pass --agent FILE, or --probe-agent", tmp_path)


def test_manifest_records_the_probe(tmp_path: Path):
    from osbuilder.config import make_config
    from osbuilder.pack.manifest import write_manifest
    from osbuilder.rootfs.summary import Summary

    config, _ = make_config({"distro": "debian", "init": "agent", "probe_agent": True, "arch": "x86_64",
                             "output": tmp_path / "out"})
    summary = Summary("x86_64", "debian", "bookworm", (), (), "agent", "osbuilder:probe", "unknown", "0" * 64, None,
                      probe=True)
    write_manifest(tmp_path / "manifest.json", config.as_json(), summary, [], 0)
    manifest = validate_manifest(tmp_path / "manifest.json")
    assert manifest["agent"]["probe"] is True and manifest["config"]["probe_agent"] is True
    assert manifest["config"]["agent"] is None


def test_the_kvm_probe_says_yes_only_for_a_machine_that_prints_the_banner():
    """auto's decision: KVM when the probe machine shows the kernel's banner in time, TCG when
    it prints something else, nothing, or stops. Stand-in machines (shell commands) make each
    case happen on any host; tests/integration/test_boot.py probes the real qemu."""
    from osbuilder.boot.session import shows_kernel_progress

    banner = ["sh", "-c", "echo 'Linux version 6.1.0-28-amd64'; sleep 30"]
    began = time.monotonic()
    assert shows_kernel_progress(banner, Runner(kill_grace=0.5), seconds=20) is True
    assert time.monotonic() - began < 10, "a match must not wait for the deadline"
    for silent in (["sh", "-c", "echo 'SeaBIOS'; sleep 30"], ["sh", "-c", "exit 1"]):
        began = time.monotonic()
        assert shows_kernel_progress(silent, Runner(kill_grace=0.5), seconds=1) is False
        assert time.monotonic() - began < 1 + 0.5 + 5


def test_a_kernel_for_another_arch_is_refused(tmp_path: Path):
    initrd, kernel, work = boot_inputs(tmp_path, bzimage_around(elf_with_note(18)))
    result = run_cli("boot", initrd, "--kernel", kernel, "--arch", "aarch64", "--accel", "tcg")
    assert_refused(result, "is for x86_64, the artifact for aarch64", work)

