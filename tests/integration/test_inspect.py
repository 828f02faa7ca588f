"""`osbuilder inspect` on artifacts the tests pack from small guests, in both init modes:
what it reports, what it verifies, what it infers for images osbuilder did not build."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from osbuilder.foundation.fsutil import sha256_file
from osbuilder.foundation.guest_layout import SUMMARY_PATH
from tests.conftest import run_cli
from tests.helpers import make_minimal_guest
from tests.unit.test_cli_errors import assert_refused

pytestmark = pytest.mark.slow  # real mkfs, fsck, debugfs, veritysetup and xorriso

AGENT = Path("/bin/busybox")
FORMATS = {
    "initrd": ["initrd"],
    "initrd-zstd": ["initrd", "--compression", "zstd"],
    "ext4-dax": ["image", "--fs", "ext4"],
    "ext4": ["image", "--fs", "ext4", "--no-dax"],
    "erofs": ["image", "--fs", "erofs", "--no-dax"],
    "xfs": ["image", "--fs", "xfs", "--no-dax"],
    "verity": ["image", "--fs", "ext4", "--verity"],
    "iso": ["iso"],
}


@pytest.fixture(scope="module")
def guests(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("guests")
    return {mode: make_minimal_guest(base / mode, AGENT, mode) for mode in ("agent", "systemd")}


def pack(tree: Path, out: Path, args: list[str]) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    result = run_cli(*args, tree, "-o", out, "--force", "-q")
    assert result.returncode == 0, result.stderr
    return out


def inspect_json(path: Path, *extra: str) -> tuple[int, dict]:
    result = run_cli("inspect", path, "--json", *extra)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout) if result.stdout else {}


@pytest.mark.parametrize("mode", ["agent", "systemd"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_inspect_reports_every_format_in_both_modes(guests, tmp_path: Path, mode: str, fmt: str):
    artifact = pack(guests[mode], tmp_path / "out" / "artifact", FORMATS[fmt])
    code, report = inspect_json(artifact)
    assert code == 0, report
    assert report["arch"] == {"value": "x86_64", "source": "osbuilder.yaml", "inferred": False}
    assert report["init_mode"]["value"] == mode and not report["init_mode"]["inferred"]
    assert report["cgroup_driver"]["value"] == ("cgroupfs" if mode == "agent" else "host")
    assert report["distro"]["value"] == {"name": "debian", "release": "bookworm"}
    assert report["builder"]["value"]["name"] == "osbuilder" and report["builder"]["value"]["created"]
    agent = report["agent"]
    assert agent["verified"] is True and agent["sha256"] == sha256_file(AGENT) and agent["probe"] is False
    assert agent["path"] == ("/sbin/init" if mode == "agent" else "/usr/bin/kata-agent")
    assert report["packages"] == {"count": 0, "list": []}
    assert report["findings"] == []
    layout = report["layout"]
    kind = FORMATS[fmt][0]
    assert report["artifact"]["kind"] == kind and layout["format"] == kind
    if kind == "initrd":
        codec = "zstd" if "zstd" in fmt else "gzip"
        assert layout["compression"] == codec and layout["kernel_config"] == f"CONFIG_RD_{codec.upper()}"
    if kind == "image":
        dax = "--no-dax" not in FORMATS[fmt]
        assert layout["dax"]["present"] == dax and (not dax or layout["dax"]["valid"] and layout["dax"]["checksum_ok"])
        assert layout["partition_table"][0]["offset"] == (3 if dax else 1) << 20
        assert layout["verity"]["hash_partition"] == (fmt == "verity")
        assert bool(layout["verity"]["root_hash_sidecar"]) == (fmt == "verity")
        fs = layout["filesystem"]
        assert fs["type"] == FORMATS[fmt][2] and fs["size"] == layout["partition_table"][0]["size"]
        assert 0 < fs["used"] <= fs["size"]


def test_the_text_report_names_the_facts(guests, tmp_path: Path):
    image = pack(guests["systemd"], tmp_path / "kata.img", FORMATS["verity"])
    result = run_cli("inspect", image)
    assert result.returncode == 0, result.stderr
    for text in ("arch:          x86_64", "init mode:     systemd", "cgroup driver: host", "(verified)",
                 "DAX header:    valid (checksum ok)", "filesystem:    ext4", "findings: none", "dm-verity:     hash"):
        assert text in result.stdout, result.stdout


def copy_tree(source: Path, dest: Path) -> Path:
    subprocess.run(["cp", "-a", str(source), str(dest)], check=True)
    return dest


def test_a_replaced_agent_is_a_finding_not_a_crash(guests, tmp_path: Path):
    tree = copy_tree(guests["agent"], tmp_path / "tree")
    os.unlink(tree / "usr/sbin/init")  # /sbin -> usr/sbin
    shutil.copy2("/usr/bin/true", tree / "usr/sbin/init")
    initrd = tmp_path / "x.initrd"
    # The packer refuses such a tree (the agent is checked), so the artifact is made by hand.
    from osbuilder.pack.compress import CODECS
    from osbuilder.pack.cpio import archive_tree

    with open(initrd, "wb") as out:
        archive_tree(tree, out, 0)
    assert CODECS["none"].magic == initrd.read_bytes()[:6]
    code, report = inspect_json(initrd)
    assert code == 1
    assert [f["code"] for f in report["findings"]] == ["init-not-agent"]  # in agent mode the agent is /sbin/init
    assert report["agent"]["verified"] is False

    systemd_tree = copy_tree(guests["systemd"], tmp_path / "systemd-tree")
    (systemd_tree / "usr/bin/kata-agent").write_bytes((systemd_tree / "usr/bin/kata-agent").read_bytes() + b"!")
    code, report = inspect_json(systemd_tree)
    assert code == 1 and [f["code"] for f in report["findings"]] == ["agent-digest-mismatch"]


def test_a_damaged_dax_header_is_a_finding(guests, tmp_path: Path):
    image = pack(guests["agent"], tmp_path / "kata.img", FORMATS["ext4-dax"])
    with open(image, "r+b") as f:
        f.seek(4096 + 60)
        f.write(b"\x01")
    code, report = inspect_json(image)
    assert code == 1 and [f["code"] for f in report["findings"]] == ["dax-header-checksum"]
    assert report["layout"]["dax"] == {"present": True, "checksum_ok": False, "mode": 1, "align": 2 << 20,
                                       "valid": False}


def test_the_declared_mode_is_checked_against_the_tree(guests, tmp_path: Path):
    agent_tree = copy_tree(guests["agent"], tmp_path / "agent")
    (agent_tree / "usr/sbin/init").unlink()
    (agent_tree / "usr/lib/systemd").mkdir(parents=True, exist_ok=True)
    shutil.copy2("/usr/bin/true", agent_tree / "usr/lib/systemd/systemd")
    os.symlink("/lib/systemd/systemd", agent_tree / "usr/sbin/init")
    code, report = inspect_json(agent_tree)
    assert code == 1 and [f["code"] for f in report["findings"]] == ["init-not-agent"]

    systemd_tree = copy_tree(guests["systemd"], tmp_path / "systemd")
    (systemd_tree / "usr/sbin/init").unlink()
    shutil.copy2(AGENT, systemd_tree / "usr/sbin/init")
    code, report = inspect_json(systemd_tree)
    assert code == 1 and [f["code"] for f in report["findings"]] == ["init-not-systemd"]


def write_upstream_summary(tree: Path, agent_is_init: str | None) -> None:
    summary = tree / SUMMARY_PATH.lstrip("/")
    if agent_is_init is None:
        summary.unlink()
        return
    # What Kata's own rootfs builder writes: no init-mode, no cgroup driver, no digests.
    summary.write_text(f'---\nosbuilder:\n  url: "https://github.com/kata-containers/kata-containers"\n'
                       f'  version: "3.2.0"\nrootfs-creation-time: "2024-01-01T00:00:00Z"\n'
                       f'description: "osbuilder rootfs"\nfile-format-version: "0.0.2"\narchitecture: "x86_64"\n'
                       f'base-distro:\n  name: "ubuntu"\n  version: "noble"\n  packages:\n    default:\n'
                       f'      - "chrony"\n    extra: []\nagent:\n  url: "https://github.com/kata-containers"\n'
                       f'  name: "kata-agent"\n  version: "3.2.0"\n  agent-is-init-daemon: "{agent_is_init}"\n')


@pytest.mark.parametrize("mode,flag", [("agent", "yes"), ("systemd", "no")])
def test_upstream_images_are_described_with_inferred_facts(guests, tmp_path: Path, mode: str, flag: str):
    tree = copy_tree(guests[mode], tmp_path / "tree")
    write_upstream_summary(tree, flag)
    image = pack(tree, tmp_path / "kata.img", ["image", "--init", mode, "--no-dax"])
    code, report = inspect_json(image)
    assert code == 0, report
    assert report["init_mode"]["value"] == mode and report["init_mode"]["inferred"] is True
    assert "agent-is-init-daemon" in report["init_mode"]["source"]
    assert report["distro"]["value"] == {"name": "ubuntu", "release": "noble"}
    assert report["packages"] is None and report["agent"]["verified"] is None
    assert report["builder"]["value"]["version"] == "3.2.0"


@pytest.mark.parametrize("mode", ["agent", "systemd"])
def test_images_without_a_summary_are_described_from_the_tree(guests, tmp_path: Path, mode: str):
    tree = copy_tree(guests[mode], tmp_path / "tree")
    write_upstream_summary(tree, None)
    image = pack(tree, tmp_path / "kata.img", ["image", "--init", mode, "--arch", "x86_64", "--no-dax", "--fs", "erofs"])
    code, report = inspect_json(image)
    assert code == 0, report
    assert report["init_mode"]["value"] == mode and report["init_mode"]["inferred"] is True
    assert "/sbin/init" in report["init_mode"]["source"]
    assert report["arch"] == {"value": "x86_64", "source": "the ELF header of the agent or /sbin/init",
                              "inferred": True}
    assert report["distro"]["inferred"] is True and report["builder"]["value"] is None


def x86_elf(path: Path) -> Path:
    path.write_bytes(b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack("<HH", 2, 62) + bytes(200))
    path.chmod(0o755)
    return path


def launcher_tree(guests, tmp_path: Path) -> Path:
    """Kata's GPU shape: a small init (not the agent, not systemd) is /sbin/init and starts the
    agent at /usr/bin/kata-agent. osbuilder does not build these; inspect recognises them."""
    tree = copy_tree(guests["agent"], tmp_path / "launcher")
    shutil.copy2(AGENT, tree / "usr/bin/kata-agent")
    (tree / "usr/sbin/init").unlink()
    x86_elf(tree / "usr/sbin/init")
    write_upstream_summary(tree, None)
    return tree


def test_a_launcher_image_is_reported_as_such(guests, tmp_path: Path):
    tree = launcher_tree(guests, tmp_path)
    code, report = inspect_json(tree)
    assert code == 0, report
    assert report["init_mode"]["value"] == "launcher" and report["init_mode"]["inferred"] is True
    assert report["cgroup_driver"]["value"] == "cgroupfs-only" and report["agent"]["path"] == "/usr/bin/kata-agent"


def release_tree(guests, root: Path) -> Path:
    """Kata's release layout (docs/kata-contract.md, release packaging)."""
    share = root / "opt/kata/share/kata-containers"
    share.mkdir(parents=True)
    pack(guests["systemd"], share / "kata-debian-bookworm.image", FORMATS["verity"])
    assert (share / "root_hash_base.txt").is_file()  # Kata's name for the measured plain image
    pack(guests["agent"], share / "kata-debian-bookworm.initrd", FORMATS["initrd"])
    os.symlink("kata-debian-bookworm.image", share / "kata-containers.img")
    os.symlink("kata-debian-bookworm.initrd", share / "kata-containers-initrd.img")
    return root


def test_a_release_directory_and_its_tarballs_give_one_report_per_artifact(guests, tmp_path: Path):
    root = release_tree(guests, tmp_path / "release")
    code, reports = inspect_json(root)
    assert code == 0, reports
    assert [(r["artifact"]["kind"], r["init_mode"]["value"]) for r in reports] == [("initrd", "agent"),
                                                                                    ("image", "systemd")]
    assert reports[1]["layout"]["verity"]["root_hash_sidecar"].endswith("/root_hash_base.txt")
    for suffix, compress in ((".tar.zst", ["--zstd"]), (".tar.xz", ["--xz"]), (".tar", [])):
        tarball = tmp_path / f"kata-static-rootfs{suffix}"
        subprocess.run(["tar", "-cf", str(tarball), *compress, "-C", str(root), "."], check=True)
        code, from_tar = inspect_json(tarball)
        assert code == 0, from_tar
        assert [r["agent"]["sha256"] for r in from_tar] == [r["agent"]["sha256"] for r in reports]
        assert from_tar[1]["layout"]["verity"]["root_hash_sidecar"] is not None
    # A release from older osbuilder named the file root_hash.txt: still read.
    share = root / "opt/kata/share/kata-containers"
    os.replace(share / "root_hash_base.txt", share / "root_hash.txt")
    code, old = inspect_json(root)
    assert code == 0, old
    assert old[1]["layout"]["verity"]["root_hash_sidecar"].endswith("/root_hash.txt")


def test_a_release_link_that_leaves_the_release_is_refused(tmp_path: Path):
    root = tmp_path / "release"
    (root / "share/kata-containers").mkdir(parents=True)  # where a release keeps its links
    os.symlink("/etc/hostname", root / "share/kata-containers/kata-containers.img")
    result = run_cli("inspect", root)
    assert result.returncode == 2 and len(result.error_lines) == 1
    assert "points outside the release" in result.error_lines[0]


@pytest.mark.parametrize("case", ["truncated image", "garbage initrd", "no rootfs", "missing"])
def test_bad_input_is_one_line_and_exit_2(guests, tmp_path: Path, case: str):
    out = tmp_path / "out"
    out.mkdir()
    if case == "truncated image":
        target = pack(guests["agent"], tmp_path / "kata.img", FORMATS["ext4-dax"])
        with open(target, "r+b") as f:
            f.truncate(target.stat().st_size // 3)
        fragment = "is truncated"
    elif case == "garbage initrd":
        target = tmp_path / "initrd.img"
        target.write_bytes(b"070701" + b"zz" * 100)
        fragment = "not a valid newc archive"
    elif case == "no rootfs":
        target = tmp_path / "empty-dir"
        target.mkdir()
        fragment = "neither a rootfs nor a Kata release"
    else:
        target = tmp_path / "nothing-here"
        fragment = "does not exist"
    assert_refused(run_cli("inspect", target), fragment, out)
