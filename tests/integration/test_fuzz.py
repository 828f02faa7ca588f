"""A bounded fuzz run over the readers: small artifacts and host configs the tests build
(gzip and zstd initrds, an ISO, ext4 and erofs images, a runtime config, a kubelet config),
mutated with a fixed seed (truncations, flipped bytes, zeroed ranges, repeated ranges), each
given to the real command line under a deadline and a memory cap. Every run must exit 0, 1
or 2, print no traceback and no "internal error", and finish in time.

The counts (runs per artifact, per exit code) are printed at the end (pytest -s shows them)
and recorded in benchmarks/README.md ("Fuzzing the readers")."""

from __future__ import annotations

import collections
import random
from pathlib import Path

import pytest

from tests.hostile import MiB, run_limited, small_guest

pytestmark = pytest.mark.slow

SEED = 20261204
MUTATIONS_PER_INPUT = 40
DEADLINE_SECONDS = 60
MEMORY_CAP = 2048 * MiB

RUNTIME_CONFIG = """[hypervisor.qemu]
path = "/usr/bin/qemu-system-x86_64"
kernel = "/opt/kata/share/kata-containers/vmlinux.container"
image = "{image}"
rootfs_type = "ext4"
disable_image_nvdimm = true
kernel_params = "agent.log=debug"

[[hypervisor.qemu.guest_extension_images]]
name = "coco"
path = "/opt/kata/share/kata-containers/kata-containers-coco-extension.img"
verity_params = "root_hash=00,salt=00,data_blocks=1,data_block_size=4096,hash_block_size=4096"

[runtime]
sandbox_cgroup_only = true
"""
KUBELET_CONFIG = """apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
evictionHard:
  memory.available: "100Mi"
featureGates: {KubeletInUserNamespace: true}
"""


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    kind = rng.choice(("truncate", "flip", "zero", "repeat", "flip-many"))
    if not out:
        return bytes(out)
    if kind == "truncate":
        return bytes(out[: rng.randrange(len(out))])
    start = rng.randrange(len(out))
    length = min(len(out) - start, rng.choice((1, 4, 64, 512, 4096)))
    if kind == "flip":
        out[start] ^= rng.randrange(1, 256)
    elif kind == "zero":
        out[start:start + length] = bytes(length)
    elif kind == "repeat":
        out[start:start] = out[start:start + length] * rng.randrange(2, 16)
    else:
        for _ in range(rng.randrange(2, 32)):
            out[rng.randrange(len(out))] ^= rng.randrange(1, 256)
    return bytes(out)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, tuple[Path, tuple[str, ...]]]:
    """Each input, and the command that reads it ({} stands for the mutated file)."""
    base = tmp_path_factory.mktemp("fuzz")
    rootfs = small_guest(base)
    made: dict[str, tuple[Path, tuple[str, ...]]] = {}
    for name, args in (("initrd.gz", ("initrd", "--compression", "gzip")),
                       ("initrd.zst", ("initrd", "--compression", "zstd")),
                       ("guest.iso", ("iso",)),
                       ("ext4.img", ("image", "--fs", "ext4", "--no-dax")),
                       ("erofs.img", ("image", "--fs", "erofs", "--no-dax"))):
        out = base / name
        result = run_limited(args[0], rootfs, "-o", out, *args[1:], timeout=300, memory=4096 * MiB,
                             file_size=2048 * MiB)
        assert result.returncode == 0, result.stderr
        made[name] = (out, ("inspect", "{}"))
    runtime = base / "configuration.toml"
    runtime.write_text(RUNTIME_CONFIG.format(image=made["ext4.img"][0]))
    made["configuration.toml"] = (runtime, ("check", "--runtime-config", "{}", "--host-cgroup-driver", "cgroupfs"))
    kubelet = base / "kubelet.yaml"
    kubelet.write_text(KUBELET_CONFIG)
    made["kubelet.yaml"] = (kubelet, ("check", made["initrd.gz"][0], "--kubelet-config", "{}"))
    return made


def test_mutated_inputs_never_crash_hang_or_exhaust(inputs, tmp_path):
    rng = random.Random(SEED)
    counts: dict[str, collections.Counter[int]] = {}
    failures = []
    for name, (original, command) in inputs.items():
        data = original.read_bytes()
        counts[name] = collections.Counter()
        for number in range(MUTATIONS_PER_INPUT):
            mutated = tmp_path / f"{number}-{name}"
            mutated.write_bytes(mutate(data, rng))
            argv = [str(mutated) if part == "{}" else part for part in command]
            result = run_limited(*argv, timeout=DEADLINE_SECONDS, memory=MEMORY_CAP, file_size=1024 * MiB)
            counts[name][result.returncode] += 1
            if result.returncode not in (0, 1, 2) or "Traceback" in result.stderr \
                    or "internal error" in result.stderr:
                failures.append(f"{mutated}: exit {result.returncode}: {result.stderr[-600:]}")
                continue
            mutated.unlink()
    print("\nfuzz runs (seed", SEED, "):")
    for name, counter in counts.items():
        print(f"  {name}: {sum(counter.values())} runs, exits " +
              ", ".join(f"{code}: {n}" for code, n in sorted(counter.items())))
    assert failures == [], "\n".join(failures)
