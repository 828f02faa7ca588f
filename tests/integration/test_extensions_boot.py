"""Composed guests booted under qemu with Debian's kernel: a systemd base with osbuilder's own
extension mount, and one whose mount came in a Kata-layout agent tarball, each with a
measured and an unmeasured extension attached as Kata's runtime attaches them; a tampered
extension and a wrong root hash fail the boot; `check` on the fragments; and an NVIDIA-shaped
guest (launcher, erofs, dm-verity, no DAX)."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.helpers import make_busybox_probe_guest
from tests.integration.booting import boot
from tests.unit.test_agent_sources import KATA_TARGET, KATA_UNIT
from tests.unit.test_extensions import extension_tree
from tests.integration.test_kata_release import kata_tarball

pytestmark = pytest.mark.slow

# A Kata-layout agent tarball's extension mount, written for this test in bash (as Kata's is),
# so the base runs files osbuilder did not write. The contract is docs/kata-contract.md, composable guests.
KATA_STYLE_UNIT = b"""[Unit]
Description=Mount Kata extension image %i
DefaultDependencies=no
Before=kata-agent.service
After=local-fs-pre.target
ConditionKernelCommandLine=kata.extension.%i.verity_params
OnFailure=poweroff.target

[Service]
Type=oneshot
RemainAfterExit=yes
StandardOutput=journal+console
ExecStart=/usr/libexec/kata-extension-mount.sh %i
ExecStop=/usr/libexec/kata-extension-umount.sh %i
"""
KATA_STYLE_MOUNT = b"""#!/bin/bash
set -euo pipefail
name="$1"
dev=""
for s in /sys/block/*/serial; do
    [[ "$(cat "$s")" == "extension-$name" ]] && dev="/dev/$(basename "$(dirname "$s")")"
done
[[ -n "$dev" ]]
params=""
for word in $(cat /proc/cmdline); do
    [[ "$word" == kata.extension.$name.verity_params=* ]] && params="${word#*=}"
done
field() { tr ',' '\\n' <<< "$params" | sed -n "s/^$1=//p"; }
src="${dev}1"
if [[ -b "${dev}2" ]]; then
    [[ -n "$params" ]]
    DM_DISABLE_UDEV=1 veritysetup open "${dev}1" "extension-$name" "${dev}2" "$(field root_hash)" --no-superblock \\
        --hash-block-size="$(field hash_block_size)" --data-block-size="$(field data_block_size)" \\
        --data-blocks="$(field data_blocks)" --salt="$(field salt)"
    src="/dev/mapper/extension-$name"
fi
mkdir -p "/run/kata-extensions/$name"
mount -t erofs -o ro "$src" "/run/kata-extensions/$name"
# To the console itself: the trimmed base runs no journald to pass the unit's output on.
echo "KATA-STYLE $name mounted" > /dev/console
"""
# What the agent would see when it starts: a drop-in for Kata's agent unit lists each mounted
# extension on the console just before the agent runs, as the probe does in osbuilder's base.
AGENT_SEES = (b"[Service]\nExecStartPre=/bin/sh -c 'for d in /run/kata-extensions/*; do "
              b"echo \"SEEN-BY-AGENT $${d##*/}:$$(find $$d -type f | wc -l)\"; done > /dev/console'\n")
KATA_STYLE_UMOUNT = b"#!/bin/bash\numount \"/run/kata-extensions/$1\" || true\n"
KATA_STYLE_GENERATOR = b"""#!/bin/bash
wants="${1:-/tmp}/kata-containers.target.wants"
for word in $(cat /proc/cmdline); do
    case "$word" in kata.extension.*.verity_params*) ;; *) continue ;; esac
    name="${word#kata.extension.}"
    name="${name%%.verity_params*}"
    [[ "$name" =~ ^[a-zA-Z0-9_-]+$ ]] || continue
    mkdir -p "$wants"
    ln -sf /usr/lib/systemd/system/kata-extension-mount@.service "$wants/kata-extension-mount@$name.service"
done
"""


def build(out: Path, *args) -> Path:
    result = run_cli("build", *args, "-o", out, "--json")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def extensions(tmp_path_factory) -> dict[str, Path]:
    """A measured extension (coco) and an unmeasured one (plain), each three files."""
    work = tmp_path_factory.mktemp("extensions")
    made = {}
    for name, extra in (("coco", ()), ("plain", ("--no-verity",))):
        out = build(work / name, "--distro", "debian", "--init", "none", "--extension", name, "--existing",
                    extension_tree(work / f"{name}-tree"), *extra)
        made[name] = out / "kata-containers.img"
    return made


@pytest.fixture(scope="module")
def probe_base(tmp_path_factory, cache_dir, extensions) -> Path:
    """A systemd base with osbuilder's own extension mount, built with both extensions."""
    out = build(tmp_path_factory.mktemp("base") / "out", "--distro", "debian", "--init", "systemd", "--probe-agent",
                "--format", "image", "--fs", "erofs", "--no-dax", "--cache-dir", cache_dir,
                "--with-extension", f"coco={extensions['coco']}", "--with-extension", f"plain={extensions['plain']}")
    return out


def attach(extensions: dict[str, Path]) -> list[str]:
    return [word for name, path in extensions.items() for word in ("--extension", f"{name}={path}")]


def test_osbuilder_s_mount_brings_up_a_measured_and_an_unmeasured_extension(probe_base, extensions, boot_cache):
    result, report = boot(probe_base / "kata-containers.img", boot_cache, *attach(extensions),
                          "--expect", r"OSBUILDER-PROBE .* extensions=\S*coco:3")
    assert result.returncode == 0, result.stderr + result.stdout
    assert report["probe"]["extensions"] == {"coco": 3, "plain": 3}
    assert [(e["name"], e["measured"]) for e in report["extensions"]] == [("coco", True), ("plain", False)]
    command = " ".join(report["command"])
    assert "serial=extension-coco" in command and "serial=extension-plain" in command


def test_a_tampered_extension_fails_the_boot(probe_base, extensions, boot_cache, tmp_path):
    tampered = tmp_path / "kata-containers.img"
    shutil.copy(extensions["coco"], tampered)
    shutil.copy(next(extensions["coco"].parent.glob("root_hash_*.txt")), tmp_path)
    info = json.loads(run_cli("inspect", tampered, "--json").stdout)["layout"]["partition_table"][0]
    with open(tampered, "r+b") as f:  # block 0 of the data, before erofs's superblock (byte 1024)
        f.seek(info["offset"] + 100)
        byte = f.read(1)
        f.seek(info["offset"] + 100)
        f.write(bytes([byte[0] ^ 0xFF]))
    result, report = boot(probe_base / "kata-containers.img", boot_cache, "--extension", f"coco={tampered}")
    assert result.returncode == 1 and report["outcome"] == "extension-error", result.stdout
    assert "extension coco" in report["reason"] and "mounting" in report["reason"]


def test_a_wrong_root_hash_fails_the_boot(probe_base, extensions, boot_cache, tmp_path):
    image = tmp_path / "kata-containers.img"
    shutil.copy(extensions["coco"], image)
    sidecar = next(extensions["coco"].parent.glob("root_hash_*.txt"))
    line = sidecar.read_text()
    digits = line.split("root_hash=")[1][:1]
    (tmp_path / sidecar.name).write_text(line.replace(f"root_hash={digits}", f"root_hash={'0' if digits != '0' else '1'}",
                                                      1))
    result, report = boot(probe_base / "kata-containers.img", boot_cache, "--extension", f"coco={image}")
    assert result.returncode == 1 and report["outcome"] == "extension-error", result.stdout
    assert "extension coco" in report["reason"]


def test_check_passes_the_base_s_fragment_and_flags_a_wrong_one(probe_base, extensions, tmp_path):
    fragment = tomllib.loads((probe_base / "kata-runtime.toml").read_text())["hypervisor"]["qemu"]
    tables = fragment["guest_extension_images"]
    assert [(t["name"], bool(t["verity_params"])) for t in tables] == [("coco", True), ("plain", False)]
    # At the paths this machine has them, the fragment checks clean.
    config = tmp_path / "configuration.toml"

    def write(tables: list[dict], image: Path) -> None:
        lines = ["[hypervisor.qemu]", f'image = "{image}"', 'rootfs_type = "erofs"', "disable_image_nvdimm = true"]
        for table in tables:
            lines += ["[[hypervisor.qemu.guest_extension_images]]"] + [f'{k} = "{v}"' for k, v in table.items()]
        config.write_text("\n".join(lines) + "\n")

    local = [dict(t, path=str(extensions[t["name"]])) for t in tables]
    write(local, probe_base / "kata-containers.img")
    result = run_cli("check", "--runtime-config", config, "--json")
    codes = {f["code"] for f in json.loads(result.stdout)["findings"]}
    assert not {c for c in codes if c.startswith("extension-")}, result.stdout
    # Each finding, once its cause is there.
    swapped = [dict(local[0], verity_params=local[0]["verity_params"].replace("data_blocks=", "data_blocks=9")),
               dict(local[1], verity_params=local[0]["verity_params"]),
               dict(local[1], path=str(probe_base / "kata-containers.img"), name="base"),
               dict(local[1], path=str(tmp_path / "gone.img"), name="gone"),
               dict(local[1], name="plain"), dict(local[1], name="no.dots")]
    write(swapped, probe_base / "kata-containers.img")
    findings = json.loads(run_cli("check", "--runtime-config", config, "--json").stdout)["findings"]
    by_index: dict[str, set[str]] = {}
    for finding in findings:
        if finding["code"].startswith("extension-"):
            by_index.setdefault(finding["subject"].rsplit("[", 1)[-1].rstrip("]"), set()).add(finding["code"])
    # "no.dots" is also not the name its image records (the warning extension-name-mismatch).
    assert by_index == {"0": {"extension-verity-mismatch"}, "1": {"extension-verity-mismatch"},
                        "2": {"extension-not-extension"}, "3": {"extension-image-missing"},
                        "4": {"extension-name-duplicate"},
                        "5": {"extension-name-invalid", "extension-name-mismatch"}}


def test_a_base_from_a_kata_agent_tarball_mounts_with_its_own_files(cache_dir, extensions, agent_x86_64,
                                                                     boot_cache, tmp_path):
    tarball = kata_tarball(tmp_path / "kata-static-agent.tar.zst", {
        "./usr/bin/kata-agent": (agent_x86_64.read_bytes(), 0o755),
        "./usr/lib/systemd/system/kata-agent.service": (KATA_UNIT, 0o644),
        "./usr/lib/systemd/system/kata-containers.target": (KATA_TARGET, 0o644),
        "./usr/lib/systemd/system/kata-extension-mount@.service": (KATA_STYLE_UNIT, 0o644),
        "./usr/libexec/kata-extension-mount.sh": (KATA_STYLE_MOUNT, 0o755),
        "./usr/libexec/kata-extension-umount.sh": (KATA_STYLE_UMOUNT, 0o755),
        "./usr/lib/systemd/system-generators/kata-extension-mount-generator": (KATA_STYLE_GENERATOR, 0o755),
        "./usr/lib/systemd/system/kata-agent.service.d/10-extensions-seen.conf": (AGENT_SEES, 0o644)})
    out = build(tmp_path / "base", "--distro", "debian", "--init", "systemd", "--agent-tarball", tarball,
                "--layout", "kata", "--format", "image", "--fs", "erofs", "--no-dax", "--cache-dir", cache_dir)
    image = out / "opt/kata/share/kata-containers/kata-containers.img"
    result, report = boot(image, boot_cache, *attach(extensions),
                          "--expect", r"(?s)^(?=.*KATA-STYLE coco mounted)(?=.*KATA-STYLE plain mounted)"
                                      r"(?=.*SEEN-BY-AGENT coco:[1-9])(?=.*SEEN-BY-AGENT plain:[1-9])")
    assert result.returncode == 0, result.stderr + result.stdout


def test_agent_and_launcher_bases_cannot_mount_extensions(extensions, tmp_path, agent_x86_64):
    tree = make_busybox_probe_guest(tmp_path / "tree", "x86_64", agent_x86_64)
    image = tmp_path / "agent.img"
    assert run_cli("image", tree, "-o", image, "--no-dax").returncode == 0
    result = run_cli("boot", image, "--kernel", "debian", "--extension", f"coco={extensions['coco']}")
    assert result.returncode == 2 and "cannot mount extension images: its init mode is agent" in result.stderr
    config = tmp_path / "configuration.toml"
    config.write_text(f'[hypervisor.qemu]\nimage = "{image}"\nrootfs_type = "ext4"\ndisable_image_nvdimm = true\n'
                      f'[[hypervisor.qemu.guest_extension_images]]\nname = "coco"\npath = "{extensions["coco"]}"\n'
                      'verity_params = ""\n')
    findings = json.loads(run_cli("check", "--runtime-config", config, "--json").stdout)["findings"]
    assert {"extension-base-cannot-mount", "extension-verity-mismatch"} <= {f["code"] for f in findings}


def test_an_nvidia_shaped_guest_boots(boot_cache, tmp_path, agent_x86_64):
    """Kata's GPU images: a launcher as /sbin/init, erofs, dm-verity, no DAX header."""
    from tests.unit.test_launcher import launcher_file

    tree = make_busybox_probe_guest(tmp_path / "tree", "x86_64", agent_x86_64, init="launcher",
                                    launcher=launcher_file(tmp_path))
    image = tmp_path / "kata-containers-nvidia-gpu.img"
    packed = run_cli("image", tree, "-o", image, "--fs", "erofs", "--verity", "--no-dax",
                     "--root-hash-label", "nvidia-gpu")
    assert packed.returncode == 0, packed.stderr
    assert (tmp_path / "root_hash_nvidia-gpu.txt").is_file()
    result, report = boot(image, boot_cache, "--host-cgroup-driver", "cgroupfs")
    assert result.returncode == 0, result.stderr + result.stdout
    assert report["device"] == "virtio-blk" and report["recorded_init_mode"] == "launcher"
    assert report["probe"]["init_mode"] is False and report["probe"]["systemd"] is False
