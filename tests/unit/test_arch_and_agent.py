import struct
from pathlib import Path

import pytest

from osbuilder.rootfs.agent import check_agent
from osbuilder.foundation.arch import ARCHES, arch_of_elf, get_arch
from osbuilder.foundation.elf import parse_elf_header
from osbuilder.foundation.errors import UserError


def test_table_covers_the_four_targets():
    assert set(ARCHES) == {"x86_64", "aarch64", "ppc64le", "s390x"}
    assert get_arch("aarch64").debian == "arm64"
    assert get_arch("ppc64le").elf_machine == 21
    assert get_arch("s390x").endianness == "big"


def test_debian_names_are_accepted_as_aliases():
    assert get_arch("amd64").name == "x86_64"
    assert get_arch("arm64").name == "aarch64"


def test_unknown_arch_names_the_choices():
    with pytest.raises(UserError) as err:
        get_arch("riscv64")
    assert "riscv64" in str(err.value) and "x86_64" in str(err.value)
    assert err.value.exit_code == 2


def elf_header(elf_class: int, endianness: str, machine: int, file_type: int = 2) -> bytes:
    order = "<" if endianness == "little" else ">"
    ident = b"\x7fELF" + bytes([1 if elf_class == 32 else 2, 1 if endianness == "little" else 2, 1]) + bytes(9)
    return ident + struct.pack(order + "HH", file_type, machine)


@pytest.mark.parametrize("header,arch", [
    (elf_header(64, "little", 62), "x86_64"),
    (elf_header(64, "little", 183, file_type=3), "aarch64"),
    (elf_header(64, "little", 21), "ppc64le"),
    (elf_header(64, "big", 22), "s390x"),
    (elf_header(64, "big", 21), None),  # big-endian ppc64 is not ppc64le
    (elf_header(32, "little", 40), None),  # 32-bit ARM
    (b"#!/bin/sh\n" + bytes(10), None),
])
def test_elf_headers_map_to_arches(header, arch):
    found = arch_of_elf(parse_elf_header(header))
    assert (found.name if found else None) == arch


def test_elf_type_decides_executable():
    assert parse_elf_header(elf_header(64, "little", 62, file_type=2)).executable
    assert parse_elf_header(elf_header(64, "little", 62, file_type=3)).executable
    assert not parse_elf_header(elf_header(64, "little", 62, file_type=1)).executable  # a relocatable .o


def test_an_object_file_is_not_an_agent(tmp_path: Path):
    obj = tmp_path / "agent.o"
    obj.write_bytes(elf_header(64, "little", 62, file_type=1) + bytes(64))
    with pytest.raises(UserError, match="not an ELF executable"):
        check_agent(obj, get_arch("x86_64"))


def test_a_foreign_elf_names_its_arch(tmp_path: Path):
    agent = tmp_path / "kata-agent"
    agent.write_bytes(elf_header(64, "big", 22) + bytes(64))
    with pytest.raises(UserError, match="agent is s390x, target is x86_64"):
        check_agent(agent, get_arch("x86_64"))


def test_host_busybox_is_accepted_for_x86_64(host_agent):
    agent = check_agent(host_agent, get_arch("x86_64"))
    assert len(agent.sha256) == 64 and "x86_64" in agent.description


def test_host_busybox_is_refused_for_aarch64(host_agent):
    with pytest.raises(UserError, match="agent is x86_64, target is aarch64"):
        check_agent(host_agent, get_arch("aarch64"))


def test_script_is_not_an_agent(tmp_path: Path):
    script = tmp_path / "agent.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(UserError, match="not an ELF executable"):
        check_agent(script, get_arch("x86_64"))


def test_missing_agent(tmp_path: Path):
    with pytest.raises(UserError, match="does not exist"):
        check_agent(tmp_path / "nope", get_arch("x86_64"))


ARCH_HEADERS = {"x86_64": (64, "little", 62), "aarch64": (64, "little", 183), "ppc64le": (64, "little", 21),
                "s390x": (64, "big", 22)}


@pytest.mark.parametrize("target", ARCH_HEADERS)
@pytest.mark.parametrize("built_for", ARCH_HEADERS)
def test_an_agent_for_another_arch_is_refused_for_each_target(tmp_path: Path, target: str, built_for: str):
    agent = tmp_path / "kata-agent"
    agent.write_bytes(elf_header(*ARCH_HEADERS[built_for]) + bytes(64))
    if built_for == target:
        assert check_agent(agent, get_arch(target)).description == f"ELF executable for {target}"
    else:
        with pytest.raises(UserError, match=f"agent is {built_for}, target is {target}"):
            check_agent(agent, get_arch(target))
