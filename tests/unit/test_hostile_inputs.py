"""Hostile and broken inputs never hang, never exhaust memory or disk, never crash: each is
refused with exit 2 and one line naming the problem. The inputs are made here (crafted newc
headers, compressed bombs, FIFOs, mistyped documents); the command line is the real one,
run under a deadline, a memory cap and a per-file size cap. The tests that run the command
line many times are marked slow; the quick loop keeps the ones that run it a few times."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from tests.helpers import fake_bootstrap
from tests.hostile import MiB, assert_clean_refusal, newc_header, newc_member, newc_trailer, run_limited, small_guest


def write_gzip(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data, mtime=0))
    return path


# -- newc archives --------------------------------------------------------------------------

def test_a_negative_filesize_is_refused_at_once_not_looped_on(tmp_path):
    archive = newc_member(b"etc", b"", 0o40755) + newc_header(b"etc/x", 0, filesize=b"-0000070") + newc_trailer()
    initrd = write_gzip(tmp_path / "initrd.img", archive)
    for command in (("inspect", initrd), ("check", initrd)):
        assert_clean_refusal(run_limited(*command, timeout=30), "not a valid newc archive", "hexadecimal")


def test_a_huge_namesize_is_refused_without_asking_for_the_memory(tmp_path):
    archive = newc_member(b"etc", b"", 0o40755) + newc_header(b"x", 0, namesize=b"FFFFFFFF") + newc_trailer()
    result = run_limited("inspect", write_gzip(tmp_path / "initrd.img", archive), memory=512 * MiB)
    assert_clean_refusal(result, "a name of 4294967295 bytes", "4096")


def test_a_member_cut_short_is_refused(tmp_path):
    archive = newc_member(b"etc", b"", 0o40755) + newc_header(b"etc/big", 1000) + b"x" * 10
    assert_clean_refusal(run_limited("inspect", write_gzip(tmp_path / "initrd.img", archive)), "cut short")


@pytest.mark.slow  # many runs of the command line
def test_a_small_initrd_of_a_huge_zero_member_writes_nothing_of_it(tmp_path):
    """300 MiB of zeros compress to 300 KiB: the reader skips the member as it streams past,
    writing none of it (each file the command writes is capped at 32 MiB here)."""
    size = 300 * MiB
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    parts = [compressor.compress(newc_member(b"sbin", b"", 0o40755) + newc_header(b"sbin/zeros", size))]
    zeros = bytes(MiB)
    parts += [compressor.compress(zeros) for _ in range(size // MiB)]
    parts += [compressor.compress(newc_trailer()), compressor.flush()]
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(b"".join(parts))
    assert initrd.stat().st_size < 2 * MiB
    result = run_limited("inspect", initrd, "--json", file_size=32 * MiB, timeout=120)
    assert result.returncode == 0 and "error" not in result.stderr, result.stderr[-2000:]
    assert json.loads(result.stdout)["artifact"]["kind"] == "initrd"


# -- host configs and artifacts that are not files -------------------------------------------

HOST_CONFIG_FLAGS = ("--runtime-config", "--containerd-config", "--crio-config", "--kubelet-config",
                     "--kernel-config")


def summary_initrd(path: Path, summary: bytes) -> Path:
    """A gzip initrd holding only an osbuilder.yaml."""
    archive = b"".join(newc_member(name, b"", 0o40755) for name in (b"var", b"var/lib", b"var/lib/osbuilder"))
    archive += newc_member(b"var/lib/osbuilder/osbuilder.yaml", summary) + newc_trailer()
    return write_gzip(path, archive)


@pytest.mark.slow  # many runs of the command line
def test_a_fifo_or_a_device_is_named_for_what_it_is_and_never_waited_on(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for special, noun in ((fifo, "a FIFO"), (Path("/dev/zero"), "a character device"),
                          (Path("/dev/null"), "a character device")):
        assert_clean_refusal(run_limited("inspect", special, timeout=20), noun)
        assert_clean_refusal(run_limited("check", special, "--host-cgroup-driver", "cgroupfs", timeout=20), noun)
        for flag in HOST_CONFIG_FLAGS:
            assert_clean_refusal(run_limited("check", "--host-cgroup-driver", "cgroupfs", flag, special,
                                             *(() if flag == "--runtime-config" else ("--runtime-config", special)),
                                             timeout=20), noun)
    runtime = tmp_path / "configuration.toml"
    runtime.write_text(f'[hypervisor.qemu]\nimage = "{fifo}"\n')
    assert_clean_refusal(run_limited("check", "--runtime-config", runtime, timeout=20), "a FIFO")


def test_a_host_config_past_the_size_limit_is_refused_without_reading_it_all(tmp_path):
    big = tmp_path / "config.toml"
    with open(big, "w") as f:
        f.write("# padding\n" * (1 << 19))  # 5 MiB
    result = run_limited("check", "--host-cgroup-driver", "cgroupfs", "--runtime-config", big, memory=512 * MiB)
    assert_clean_refusal(result, "larger than 4 MiB")


def test_deeply_nested_host_configs_are_refused(tmp_path):
    toml = tmp_path / "config.toml"
    toml.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    assert_clean_refusal(run_limited("check", "--containerd-config", toml), "nested too deeply")
    kubelet = tmp_path / "kubelet.yaml"
    kubelet.write_text("cgroupDriver: " + "[" * 70 + "]" * 70 + "\n")
    assert_clean_refusal(run_limited("check", "--kubelet-config", kubelet), "nested deeper than 64")
    kubelet.write_text("cgroupDriver: " + "[" * 5000 + "]" * 5000 + "\n")  # past libyaml's own limit too
    assert_clean_refusal(run_limited("check", "--kubelet-config", kubelet), "kubelet config")


BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))


def test_yaml_alias_bombs_are_refused_quickly(tmp_path):
    assert len(BOMB) < 400
    kubelet = tmp_path / "kubelet.yaml"
    kubelet.write_text(BOMB + "cgroupDriver: systemd\n")
    assert_clean_refusal(run_limited("check", "--kubelet-config", kubelet, timeout=20, memory=512 * MiB),
                         "aliases expand to more than")
    initrd = summary_initrd(tmp_path / "initrd.img", BOMB.encode())
    for extra in ((), ("--json",)):
        assert_clean_refusal(run_limited("inspect", initrd, *extra, timeout=20, memory=512 * MiB),
                             "osbuilder.yaml: its aliases expand to more than")


# -- documents of the wrong shape -------------------------------------------------------------

@pytest.mark.slow  # many runs of the command line
def test_a_summary_of_the_wrong_types_names_the_key(tmp_path):
    for text, key in ((b"agent: {init-mode: [agent]}\n", "agent.init-mode is a list"),
                      (b"base-distro: debian\n", "base-distro is a string"),
                      (b"agent: {sha256: !!binary aGVsbG8=}\n", "binary"),
                      (b"architecture: !!set {x86_64: null}\n", "set")):
        initrd = summary_initrd(tmp_path / "initrd.img", text)
        for extra in ((), ("--json",)):
            assert_clean_refusal(run_limited("inspect", initrd, *extra), key)


def test_a_summary_timestamp_is_read_as_the_text_it_is(tmp_path):
    initrd = summary_initrd(tmp_path / "initrd.img", b"rootfs-creation-time: 2023-11-14T22:13:20Z\n")
    result = run_limited("inspect", initrd, "--json")
    assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stderr
    assert json.loads(result.stdout)["builder"]["value"]["created"] == "2023-11-14T22:13:20Z"


@pytest.mark.slow  # many runs of the command line
def test_runtime_and_host_configs_of_the_wrong_types_name_the_key(tmp_path):
    runtime = tmp_path / "configuration.toml"
    for value in ("1", "[1]", '{ path = "x" }', "true", "1979-05-27T07:32:00Z"):
        for key in ("image", "kernel"):
            runtime.write_text(f'[hypervisor.qemu]\n{key} = {value}\n')
            assert_clean_refusal(run_limited("check", "--runtime-config", runtime, "--host-cgroup-driver", "cgroupfs"),
                                 f"[hypervisor.qemu].{key} is", "not a string")
    runtime.write_text('[hypervisor.qemu]\nimage = "/x.img"\ndisable_image_nvdimm = "false"\n')
    assert_clean_refusal(run_limited("check", "--runtime-config", runtime), "disable_image_nvdimm is a string",
                         "not a boolean")
    containerd = tmp_path / "containerd.toml"
    containerd.write_text('[plugins."io.containerd.grpc.v1.cri".containerd]\nruntimes = [1, 2]\n')
    assert_clean_refusal(run_limited("check", "--containerd-config", containerd), "runtimes is a list")
    containerd.write_text('[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]\n'
                          'runtime_type = "io.containerd.kata.v2"\noptions = { SystemdCgroup = "yes" }\n')
    assert_clean_refusal(run_limited("check", "--containerd-config", containerd), "SystemdCgroup is a string")


def test_an_error_quotes_a_value_only_so_far(tmp_path):
    crio = tmp_path / "crio.conf"
    crio.write_text("[crio.runtime]\ncgroup_manager = [" + ",".join(['"systemd"'] * 200_000) + "]\n")
    result = run_limited("check", "--crio-config", crio)
    assert_clean_refusal(result, "cgroup_manager", "characters)")
    assert len(result.stderr) < 400


# -- damaged artifacts and tarballs: exit 2, the input named -----------------------------------

@pytest.mark.slow  # many runs of the command line
def test_cut_and_damaged_initrds_are_bad_input(tmp_path):
    rootfs = small_guest(tmp_path)
    for compression in ("gzip", "zstd", "xz"):
        initrd = tmp_path / f"initrd.{compression}"
        made = run_limited("initrd", rootfs, "-o", initrd, "--compression", compression)
        assert made.returncode == 0, made.stderr
        data = initrd.read_bytes()
        cut = tmp_path / f"cut.{compression}"
        cut.write_bytes(data[: len(data) // 2])
        flipped = tmp_path / f"flipped.{compression}"
        flipped.write_bytes(data[:200] + bytes(b ^ 0x55 for b in data[200:4000]) + data[4000:])
        for damaged in (cut, flipped):
            for command in (("inspect",), ("check", "--host-cgroup-driver", "cgroupfs")):
                result = run_limited(*command, damaged)
                assert result.returncode == 2, (compression, damaged.name, command, result.stderr)
                assert "Traceback" not in result.stderr and str(damaged) in result.stderr, result.stderr


def test_an_iso_with_a_damaged_path_table_is_bad_input(tmp_path):
    """Every other byte of the path table flipped, read in this process (inspect's own code)
    for speed; the first flip that ruins the ISO is then run through the command line."""
    from osbuilder.foundation.errors import UserError
    from osbuilder.foundation.runner import Runner
    from osbuilder.inspect import inspect_many

    iso = tmp_path / "guest.iso"
    made = run_limited("iso", small_guest(tmp_path), "-o", iso)
    assert made.returncode == 0, made.stderr
    data = iso.read_bytes()
    table = int.from_bytes(data[16 * 2048 + 140: 16 * 2048 + 144], "little") * 2048
    size = int.from_bytes(data[16 * 2048 + 132: 16 * 2048 + 136], "little")
    fatal = None
    for offset in range(0, size, 2):
        damaged = bytearray(data)
        damaged[table + offset] ^= 0x5A
        iso.write_bytes(damaged)
        work = tmp_path / f"work{offset}"
        work.mkdir()
        try:
            inspect_many(iso, work, Runner())
        except UserError:
            fatal = fatal if fatal is not None else bytes(damaged)
    assert fatal is not None  # some flips ruin the ISO: each was a UserError, nothing else escaped
    iso.write_bytes(fatal)
    assert_clean_refusal(run_limited("inspect", iso), "is not a readable ISO")


def test_a_cut_agent_tarball_is_bad_input(tmp_path):
    tree = tmp_path / "tree"
    fake_bootstrap(tree, with_systemd=False)
    shutil.copy("/bin/busybox", tree / "usr/bin/sh")
    agent = tmp_path / "agent"
    (agent / "usr/bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", agent / "usr/bin/kata-agent")
    for suffix, flag in ((".tar.gz", "-z"), (".tar.zst", "--zstd"), (".tar.xz", "-J")):
        whole = tmp_path / f"agent{suffix}"
        subprocess.run(["tar", "-C", agent, flag, "-cf", whole, "./usr"], check=True)
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        result = run_limited("build", "--distro", "debian", "--init", "agent", "--existing", tree,
                             "--agent-tarball", cut, "-o", tmp_path / f"out{suffix}")
        assert_clean_refusal(result, str(cut))
        assert not (tmp_path / f"out{suffix}").exists()


def test_an_overlay_over_the_init_is_refused_before_any_work(tmp_path):
    tree = tmp_path / "tree"
    fake_bootstrap(tree, with_systemd=False)
    for holds in ("sbin/init", "usr/sbin/init", "usr/bin/kata-agent"):
        overlay = tmp_path / holds.replace("/", "-")
        (overlay / holds).parent.mkdir(parents=True)
        (overlay / holds).write_text("#!/bin/sh\n")
        result = run_limited("build", "--distro", "debian", "--init", "agent", "--existing", tree, "--agent",
                             "/bin/busybox", "--overlay", overlay, "-o", tmp_path / "out")
        assert_clean_refusal(result, f"holds {holds}", "which the init mode installs")
        assert not (tmp_path / "out").exists()


def _tarball(path: Path, members: list[tuple[str, str, str]]) -> Path:
    """A tar of (name, kind, link) members: kind 'file', 'dir', 'sym' or 'hard'."""
    import io
    import tarfile

    with tarfile.open(path, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, link in members:
            info = tarfile.TarInfo(name)
            data = b""
            if kind == "file":
                data = Path("/bin/busybox").read_bytes() if name.endswith("kata-agent") else b"x\n"
                info.size, info.mode = len(data), 0o755
            elif kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, link
            else:
                info.type, info.linkname = tarfile.LNKTYPE, link
            tar.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return path


@pytest.mark.slow  # many runs of the command line
def test_agent_tarball_members_that_only_writing_would_reveal_are_refused_before_staging(tmp_path):
    tree = tmp_path / "tree"
    fake_bootstrap(tree, with_systemd=False)
    shutil.copy("/bin/busybox", tree / "usr/bin/sh")
    agent = [("./usr", "dir", ""), ("./usr/bin", "dir", ""), ("./usr/bin/kata-agent", "file", "")]
    cases = {
        "is a hard link to a symlink": [("./usr/bin/passwd", "sym", "/etc/passwd"),
                                        ("./usr/bin/copy", "hard", "./usr/bin/passwd")],
        "is a hard link through a symlinked directory": [("./usr/etc", "sym", "/etc"),
                                                         ("./usr/bin/copy", "hard", "./usr/etc/passwd")],
        "has a name longer than Linux allows": [("./usr/bin/" + "n" * 300, "file", "")],
        "lies under a symlink loop": [("./usr/a", "sym", "b"), ("./usr/b", "sym", "a"), ("./usr/a/x", "file", "")],
        "is a hard link to no earlier file": [("./usr/bin/copy", "hard", "./usr/bin/later"),
                                              ("./usr/bin/later", "file", "")],
    }
    for why, extra in cases.items():
        tarball = _tarball(tmp_path / "agent.tar.gz", agent + extra)
        out = tmp_path / "out"
        result = run_limited("build", "--distro", "debian", "--init", "agent", "--existing", tree, "--agent-tarball",
                             tarball, "-o", out)
        assert_clean_refusal(result, why, str(tarball))
        assert "staging" not in result.stderr and "osbuilder-" not in result.stderr  # refused before any
        assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    fine = _tarball(tmp_path / "agent.tar.gz", agent + [("./usr/bin/copy", "hard", "./usr/bin/kata-agent")])
    result = run_limited("build", "--distro", "debian", "--init", "agent", "--existing", tree, "--agent-tarball",
                         fine, "-o", tmp_path / "fine")
    assert result.returncode == 0, result.stderr


@pytest.mark.slow  # many runs of the command line
def test_a_device_or_fifo_given_as_a_build_input_is_named_for_what_it_is(tmp_path):
    tree = tmp_path / "tree"
    fake_bootstrap(tree, with_systemd=False)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for special, noun in ((Path("/dev/zero"), "a character device"), (fifo, "a FIFO")):
        for flag in ("--guest-hooks", "--pause-image", "--coco-components", "--agent-policy", "--ca-bundle",
                     "--lock", "--agent-tarball", "--agent"):
            probe = () if flag in ("--agent-tarball", "--agent") else ("--probe-agent",)
            result = run_limited("build", "--distro", "debian", "--init", "agent", *probe, "--existing", tree,
                                 flag, special, "-o", tmp_path / "out", timeout=20)
            assert_clean_refusal(result, f"'{special}' is {noun}, not a file")
        result = run_limited("boot", tmp_path / "no.img", "--kernel", special, timeout=20)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr


# -- recipe values and flags that become paths or arguments -----------------------------------

@pytest.mark.slow  # many runs of the command line
def test_recipe_values_that_would_become_paths_or_arguments_are_refused(tmp_path):
    original = (Path(__file__).resolve().parents[2] / "distros/debian.toml").read_text()
    cases = {
        'releases = ["bookworm", "trixie"]': ('releases = ["bookworm", "../../../ESCAPE"]', "releases"),
        'always = [': ('always = ["vim;rm -rf /", ', "packages.always"),
        'mirror = "http://deb.debian.org/debian"': ('mirror = "http://deb.debian.org/debian $(reboot)"', "mirror"),
    }
    for old, (new, key) in cases.items():
        assert old in original, old
        recipes = tmp_path / key
        recipes.mkdir()
        (recipes / "debian.toml").write_text(original.replace(old, new, 1))
        for command in (("distros", "--recipes-dir", recipes),
                        ("build", "--recipes-dir", recipes, "--distro", "debian", "--init", "agent", "--probe-agent",
                         "-o", tmp_path / "out")):
            assert_clean_refusal(run_limited(*command), key)
        assert not (tmp_path / "out").exists()
    for flag, value in (("--extra-packages", "vim,`reboot`"), ("--mirror", "ftp://mirror/debian"),
                        ("--mirror", "http://deb.debian.org/debian'")):
        result = run_limited("build", "--distro", "debian", "--init", "agent", "--probe-agent", flag, value,
                             "-o", tmp_path / "out")
        assert_clean_refusal(result, flag)


# -- processes: nothing outlives a killed osbuilder ------------------------------------------

def test_a_command_and_its_children_die_with_a_killed_osbuilder(tmp_path):
    """osbuilder's runner starts a command whose own child writes nothing (so no broken pipe
    would stop it), and osbuilder is then SIGKILLed: both die with it."""
    import signal
    import sys
    import time

    marker = f"OSBUILDER_TEST_MARKER={tmp_path}"  # in the environment of the command and its child
    script = ("from osbuilder.foundation.runner import Runner, PACKAGE_MANAGER\n"
              "Runner().run(['sh', '-c', 'sleep 300 & sleep 300; wait'], limit=PACKAGE_MANAGER, "
              f"env={{'OSBUILDER_TEST_MARKER': '{tmp_path}'}})\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def running() -> list[str]:
        found = []
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and marker.encode() in (proc / "environ").read_bytes().split(b"\0"):
                    found.append(proc.name)
            except OSError:
                continue
        return found

    deadline = time.monotonic() + 20
    while len(running()) < 3:  # sh and its two sleeps
        assert time.monotonic() < deadline, "the command did not start"
        time.sleep(0.05)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running() == [], "a command outlived the SIGKILL of the osbuilder that started it"


def test_reading_an_initrd_s_summary_keeps_nothing_else(tmp_path):
    """What boot reads first: the summary, streamed to; a 64 MiB file before it in the archive
    is not written anywhere (the reading process may write no file past 8 MiB)."""
    import resource
    import sys

    archive = b"".join(newc_member(name, b"", 0o40755) for name in (b"usr", b"var", b"var/lib", b"var/lib/osbuilder"))
    archive += newc_header(b"usr/big", 64 * MiB) + bytes(64 * MiB)
    archive += newc_member(b"var/lib/osbuilder/osbuilder.yaml", b'agent:\n  init-mode: "agent"\n') + newc_trailer()
    initrd = write_gzip(tmp_path / "initrd.img", archive)
    script = ("import sys, tempfile\nfrom pathlib import Path\n"
              "from osbuilder.read.kind import recognise_artifact\nfrom osbuilder.read.summary import read_artifact_summary\n"
              "from osbuilder.foundation.runner import Runner\n"
              "with tempfile.TemporaryDirectory(dir=sys.argv[2]) as work:\n"
              "    print(read_artifact_summary(recognise_artifact(Path(sys.argv[1])), Path(work), Runner()))\n")
    cap = 8 * MiB
    result = subprocess.run([sys.executable, "-c", script, initrd, tmp_path], capture_output=True, text=True,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap)), timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "{'agent': {'init-mode': 'agent'}}"
