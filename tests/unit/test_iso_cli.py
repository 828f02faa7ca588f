"""`osbuilder iso`: Rock Ridge names, modes, owners and links, read back two ways."""

from __future__ import annotations

import io
import os
import stat
import subprocess
from pathlib import Path

import pycdlib
import pytest

from tests.conftest import run_cli
from tests.helpers import make_minimal_guest, snapshot
from tests.unit.test_cli_errors import assert_refused

LONG_NAME = "a-very-long-file-name-" + "x" * 180


@pytest.fixture
def guest(tmp_path: Path, host_agent: Path) -> Path:
    root = make_minimal_guest(tmp_path / "guest", host_agent)
    (root / LONG_NAME).write_text("long\n")
    deep = root.joinpath(*[f"level{i}" for i in range(12)])
    deep.mkdir(parents=True)
    (deep / "bottom").write_text("deep\n")
    os.chown(root / LONG_NAME, 1000, 1001)
    secret = root / "etc/secret"
    secret.write_text("s")
    os.chmod(secret, 0o4750)
    os.link(root / "etc/chrony/chrony.conf", root / "etc/chrony-hardlink")
    return root


def without_specials(snap: dict) -> dict:
    return {p: v for p, v in snap.items() if not (stat.S_ISCHR(v[0]) or stat.S_ISBLK(v[0]) or stat.S_ISFIFO(v[0]))}


def test_iso_reads_back_with_xorriso_and_pycdlib(tmp_path: Path, guest: Path):
    iso = tmp_path / "kata.iso"
    result = run_cli("iso", guest, "-o", iso)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "extracted"
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(out)],
                   check=True, capture_output=True)
    assert snapshot(out) == without_specials(snapshot(guest))

    reader = pycdlib.PyCdlib()
    reader.open(str(iso))
    try:
        data = io.BytesIO()
        reader.get_file_from_iso_fp(data, rr_path="/" + "/".join(f"level{i}" for i in range(12)) + "/bottom")
        assert data.getvalue() == b"deep\n"
        record = reader.get_record(rr_path=f"/{LONG_NAME}")
        px = record.rock_ridge.dr_entries.px_record or record.rock_ridge.ce_entries.px_record
        assert (px.posix_user_id, px.posix_group_id) == (1000, 1001)
        assert reader.get_record(rr_path="/etc/secret").rock_ridge.dr_entries.px_record.posix_file_mode & 0o7777 == 0o4750
        assert reader.get_record(rr_path="/sbin").rock_ridge.symlink_path() == b"usr/sbin"
    finally:
        reader.close()


def test_two_isos_are_bit_identical(tmp_path: Path, guest: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert run_cli("iso", guest, "-o", tmp_path / "a/one.iso").returncode == 0
    assert run_cli("iso", guest, "-o", tmp_path / "b/two.iso", env={"TZ": "America/New_York"}).returncode == 0
    assert (tmp_path / "a/one.iso").read_bytes() == (tmp_path / "b/two.iso").read_bytes()


def test_iso_output_directory_must_exist(tmp_path: Path, guest: Path):
    out = tmp_path / "out"
    out.mkdir()
    assert_refused(run_cli("iso", guest, "-o", out / "missing" / "x.iso"), "does not exist", out)
