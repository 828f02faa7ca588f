"""The defects the restructuring review found, each with a test that failed before the fix:
tracebacks instead of errors, osbuilder.yaml read by hand, packers without --arch, and the
settings every command reads from flags or from --config FILE.toml."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from osbuilder.foundation.guest_layout import SUMMARY_PATH
from tests.conftest import REPO, run_cli
from tests.helpers import make_minimal_guest
from tests.unit.test_boot_parts import boot_inputs, bzimage_around, elf_with_note
from tests.unit.test_cli_errors import assert_refused


def assert_one_line_failure(result, code: int, fragment: str, parent: Path | None = None) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    first = result.error_lines[0]
    assert first.startswith("osbuilder: error:") and fragment in first, result.stderr
    if parent is not None:
        assert not any(p.name.startswith(".") for p in parent.iterdir()), "staging was left behind"


@pytest.fixture
def guest(tmp_path: Path, host_agent: Path) -> Path:
    return make_minimal_guest(tmp_path / "guest", host_agent)


# -- tracebacks instead of errors ----------------------------------------------------------

def test_an_unreadable_file_in_the_tree_is_one_line(host_agent: Path):
    base = Path(tempfile.mkdtemp(prefix="osbuilder-unreadable-"))
    try:
        os.chmod(base, 0o755)
        tree = make_minimal_guest(base / "guest", host_agent)
        for directory, dirs, files in os.walk(tree):
            for name in dirs + files:
                path = Path(directory, name)
                if not path.is_symlink():
                    path.chmod(path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0))
        secret = tree / "etc/shadow"
        secret.write_text("root:*:19000::::::\n")
        secret.chmod(0o600)
        out = base / "out"
        out.mkdir(mode=0o777)
        out.chmod(0o777)
        for command in (["initrd"], ["image", "--fs", "ext4"], ["iso"]):
            result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                                     "-m", "osbuilder", *command, str(tree), "-o", str(out / "x.bin")],
                                    capture_output=True, text=True, cwd=REPO)
            result.error_lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert_one_line_failure(result, 2, "cannot read", out)
            assert "etc/shadow" in result.error_lines[0] and len(result.error_lines) == 1
            assert list(out.iterdir()) == []
    finally:
        shutil.rmtree(base)


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("command", [["initrd", "--compression", "none"], ["initrd"], ["image", "--fs", "ext4"],
                                     ["iso"]], ids=["initrd-none", "initrd-gzip", "ext4", "iso"])
def test_a_full_output_filesystem_is_one_line_and_leaves_nothing(guest: Path, small_tmpfs: Path, command):
    # Incompressible data, more than the filesystem holds.
    (guest / "usr/share/blob").write_bytes(os.urandom(3 << 20))
    result = run_cli(*command, guest, "-o", small_tmpfs / "artifact")
    assert_one_line_failure(result, 1, "no space left on device", small_tmpfs)
    assert list(small_tmpfs.iterdir()) == []


def test_a_truncated_kernel_is_one_line(tmp_path: Path):
    whole = bzimage_around(elf_with_note(18))
    initrd, kernel, work = boot_inputs(tmp_path, whole[: len(whole) - 100])
    result = run_cli("boot", initrd, "--kernel", kernel, "--accel", "tcg", "--timeout", "5")
    assert_one_line_failure(result, 2, "truncated")
    assert len(result.error_lines) == 1


def test_a_malformed_osbuilder_yaml_names_the_file_and_line(guest: Path, tmp_path: Path):
    summary = guest / SUMMARY_PATH.lstrip("/")
    summary.write_text(summary.read_text() + "agent: [unclosed\n")
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("initrd", guest, "-o", out / "initrd.img")
    assert_refused(result, "osbuilder.yaml line", out)
    assert str(summary.name) in result.error_lines[0]


# -- osbuilder.yaml with a real YAML parser ------------------------------------------------

def test_a_user_edited_osbuilder_yaml_is_read(guest: Path, tmp_path: Path):
    """Comments, flow style, single quotes and other indentation: all YAML, all read."""
    from osbuilder.rootfs.summary import parse_summary

    summary = guest / SUMMARY_PATH.lstrip("/")
    data = parse_summary(summary.read_text())
    agent = data["agent"]
    flow = ", ".join(f"'{key}': '{value}'" for key, value in agent.items())
    summary.write_text(f"# edited by hand\narchitecture:    'x86_64'\nrootfs-creation-time: "
                       f"'{data['rootfs-creation-time']}'\nagent: {{{flow}}}\n")
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("initrd", guest, "-o", out / "initrd.img")
    assert result.returncode == 0, result.stderr
    assert "init mode agent, cgroup driver cgroupfs" in result.stdout


# -- packers take --arch -------------------------------------------------------------------

def aarch64_agent(path: Path) -> Path:
    """An aarch64 static executable's ELF header (never run: packing only checks it)."""
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    path.write_bytes(ident + struct.pack("<HH", 2, 183) + bytes(200))
    return path


def test_a_foreign_tree_without_osbuilder_yaml_packs_for_its_own_arch(tmp_path: Path):
    tree = make_minimal_guest(tmp_path / "guest", aarch64_agent(tmp_path / "agent"), arch="aarch64")
    (tree / SUMMARY_PATH.lstrip("/")).unlink()
    out = tmp_path / "out"
    out.mkdir()
    inferred = run_cli("initrd", tree, "--init", "agent", "--json", "-o", out / "a.img")
    assert inferred.returncode == 0, inferred.stderr
    assert json.loads(inferred.stdout)["arch"] == "aarch64"
    given = run_cli("image", tree, "--init", "agent", "--arch", "aarch64", "--no-dax", "-o", out / "b.img")
    assert given.returncode == 0, given.stderr
    refused = tmp_path / "refused"
    refused.mkdir()
    wrong = run_cli("iso", tree, "--init", "agent", "--arch", "x86_64", "-o", refused / "c.iso")
    assert_refused(wrong, "agent is aarch64, target is x86_64", refused)


def test_arch_contradicting_the_recorded_one_is_refused(guest: Path, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    assert_refused(run_cli("initrd", guest, "--arch", "s390x", "-o", out / "i.img"), "was built for x86_64", out)


# -- settings from --config FILE.toml, --json, verbosity after the subcommand -----------

def test_config_file_keys_are_the_flags_and_flags_win(guest: Path, tmp_path: Path):
    config = tmp_path / "pack.toml"
    config.write_text('compression = "none"\ninit = "agent"\nfs = "erofs"\n')  # fs: image's, ignored by initrd
    plain = run_cli("initrd", guest, "--config", config, "-o", tmp_path / "plain.img")
    assert plain.returncode == 0, plain.stderr
    assert (tmp_path / "plain.img").read_bytes()[:6] == b"070701"
    flagged = run_cli("initrd", guest, "--config", config, "--compression", "gzip", "-o", tmp_path / "gz.img")
    assert flagged.returncode == 0, flagged.stderr
    assert (tmp_path / "gz.img").read_bytes()[:2] == b"\x1f\x8b"


@pytest.mark.parametrize("text,fragment", [
    ('compresion = "none"\n', "unknown key 'compresion'"),
    ('compression = "rar"\n', "'rar' is not one of"),
    ("level = [1]\n", "key 'level' must be a string or a number"),
    ("compression = \n", "invalid TOML"),
])
def test_bad_config_files_name_the_file_and_key(guest: Path, tmp_path: Path, text: str, fragment: str):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("initrd", guest, "--config", config, "-o", out / "i.img")
    assert_refused(result, fragment, out)
    assert str(config) in result.error_lines[0]


def test_build_settings_come_from_a_config_file_too(tmp_path: Path, host_agent: Path):
    """Validation reads the merged settings: a recipe-level refusal shows a file's values were used."""
    config = tmp_path / "build.toml"
    config.write_text(f'distro = "debian"\ninit = "agent"\nagent = "{host_agent}"\nrelease = "sid"\n'
                      f'format = ["initrd", "image"]\n')
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("build", "--config", config, "-o", out / "guest")
    assert_refused(result, "distro 'debian' has no release 'sid'", out)
    missing = run_cli("build", "--config", config, "--release", "bookworm")
    assert_refused(missing, "--output is required", out)


def test_json_and_verbosity_after_the_subcommand(guest: Path, tmp_path: Path):
    # zstd: gzip is compressed in Python and runs no command to log.
    result = run_cli("initrd", guest, "-o", tmp_path / "i.img", "--compression", "zstd", "--json", "-v")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["format"] == "initrd" and data["init_mode"] == "agent" and data["cgroup_driver"] == "cgroupfs"
    assert data["path"] == str(tmp_path / "i.img") and data["compression"] == "zstd"
    assert "$ zstd" in result.stderr  # -v after the subcommand logs every command
    quiet = run_cli("iso", guest, "-o", tmp_path / "g.iso", "-q", "--json")
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert json.loads(quiet.stdout)["format"] == "iso"


def test_verity_sidecar_has_one_name_for_every_command(guest: Path, tmp_path: Path):
    result = run_cli("image", guest, "--verity", "--no-dax", "--json", "-o", tmp_path / "custom-name.img")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sidecars"] == [str(tmp_path / "root_hash.txt")]
    assert (tmp_path / "root_hash.txt").read_text().startswith("root_hash=")
