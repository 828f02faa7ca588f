from pathlib import Path

import pytest

from osbuilder.agent import check_agent
from osbuilder.arch import ARCHES, arch_of_magic, get_arch
from osbuilder.errors import UserError


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


@pytest.mark.parametrize("description,arch", [
    ("ELF 64-bit LSB executable, x86-64, version 1 (SYSV), statically linked", "x86_64"),
    ("ELF 64-bit LSB pie executable, ARM aarch64, version 1 (SYSV), dynamically linked", "aarch64"),
    ("ELF 64-bit LSB executable, 64-bit PowerPC or cisco 7500, OpenPOWER ELF V2 ABI", "ppc64le"),
    ("ELF 64-bit MSB executable, IBM S/390, version 1 (SYSV)", "s390x"),
    ("ELF 32-bit LSB executable, ARM, EABI5 version 1 (SYSV)", None),
])
def test_magic_descriptions_map_to_arches(description, arch):
    assert arch_of_magic(description) == arch


def test_host_busybox_is_accepted_for_x86_64(host_agent):
    agent = check_agent(host_agent, get_arch("x86_64"))
    assert len(agent.sha256) == 64 and "x86-64" in agent.description


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
