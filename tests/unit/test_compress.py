"""Every codec round-trips through the system's own decompressor, deterministically."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from osbuilder.foundation.errors import UserError
from osbuilder.pack.compress import CODECS, compressing, get_codec
from osbuilder.foundation.runner import Runner
from osbuilder.foundation.tools import HostTools

PAYLOAD = (b"osbuilder " * 50000) + os.urandom(200_000)
DECOMPRESS = {"gzip": ["gzip", "-dc"], "zstd": ["zstd", "-dc"], "xz": ["xz", "-dc"], "lz4": ["lz4", "-dc"],
              "none": ["cat"]}


def compress(name: str, tools: HostTools, path: Path, level: int | None = None) -> bytes:
    codec = get_codec(name)
    with open(path, "wb") as out:
        with compressing(codec, codec.check_level(level), out, tools, Runner()) as stream:
            for i in range(0, len(PAYLOAD), 4096):
                stream.write(PAYLOAD[i:i + 4096])
    return path.read_bytes()


@pytest.mark.parametrize("name", list(CODECS))
def test_round_trip_through_the_system_decompressor(name: str, tmp_path: Path):
    tools = HostTools.probe()
    for tool, _ in CODECS[name].commands:
        assert tools.has(tool), f"{tool} is missing: run ./setup.sh"
    data = compress(name, tools, tmp_path / "out")
    assert subprocess.run(DECOMPRESS[name], input=data, capture_output=True, check=True).stdout == PAYLOAD
    assert compress(name, tools, tmp_path / "again") == data


@pytest.mark.parametrize("name", ["gzip", "xz"])
def test_python_fallback_round_trips(name: str, tmp_path: Path):
    data = compress(name, HostTools({}), tmp_path / "out")
    assert subprocess.run(DECOMPRESS[name], input=data, capture_output=True, check=True).stdout == PAYLOAD
    assert compress(name, HostTools({}), tmp_path / "again") == data


@pytest.mark.parametrize("tools", [HostTools.probe(), HostTools({})], ids=["with-tools", "without-tools"])
def test_gzip_header_has_no_name_and_no_timestamp(tools: HostTools, tmp_path: Path):
    data = compress("gzip", tools, tmp_path / "out")
    assert data[:3] == b"\x1f\x8b\x08"
    assert data[3] & 0x08 == 0, "FNAME flag set"
    assert data[4:8] == b"\0\0\0\0", "MTIME is not zero"


def test_xz_uses_the_crc32_check_the_kernel_needs(tmp_path: Path):
    data = compress("xz", HostTools.probe(), tmp_path / "out")
    assert data[6:8] == b"\x00\x01"  # stream flags: check type 1 = CRC32


def test_lz4_uses_the_legacy_frame_the_kernel_needs(tmp_path: Path):
    data = compress("lz4", HostTools.probe(), tmp_path / "out")
    assert data[:4] == bytes.fromhex("02214c18")


def test_codec_without_tool_or_fallback_says_how_to_fix(tmp_path: Path):
    with pytest.raises(UserError, match="needs the 'zstd' tool"):
        compress("zstd", HostTools({}), tmp_path / "out")


def test_levels_are_checked():
    assert get_codec("gzip").check_level(None) == 6
    with pytest.raises(UserError, match="out of range"):
        get_codec("gzip").check_level(12)
    with pytest.raises(UserError, match="unknown compression 'brotli'"):
        get_codec("brotli")
