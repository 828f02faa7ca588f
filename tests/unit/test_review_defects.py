"""The defects the restructuring review found, each with a test that failed before the fix:
tracebacks instead of errors, osbuilder.yaml read by hand, packers without --arch, and the
settings every command reads from flags or from --config FILE.toml."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from osbuilder.foundation.guest_layout import SUMMARY_PATH
from tests.conftest import run_cli
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


