"""Hostile and broken inputs never hang, never exhaust memory or disk, never crash: each is
refused with exit 2 and one line naming the problem. The inputs are made here (crafted newc
headers, compressed bombs, FIFOs, mistyped documents); the command line is the real one,
run under a deadline, a memory cap and a per-file size cap."""

from __future__ import annotations

import gzip
import os
import json
import zlib
from pathlib import Path

from tests.hostile import MiB, assert_clean_refusal, newc_header, newc_member, newc_trailer, run_limited


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
