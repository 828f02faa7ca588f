"""Hostile and broken inputs never hang, never exhaust memory or disk, never crash: each is
refused with exit 2 and one line naming the problem. The inputs are made here (crafted newc
headers, compressed bombs, FIFOs, mistyped documents); the command line is the real one,
run under a deadline, a memory cap and a per-file size cap."""

from __future__ import annotations

import gzip
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
