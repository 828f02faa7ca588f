"""Bad input: exit code 2, one line on stderr naming problem and fix, nothing created."""

from pathlib import Path

import pytest

from osbuilder.foundation.resources import recipes_dir
from tests.conftest import run_cli


def assert_refused(result, fragment: str, parent: Path) -> None:
    assert result.returncode == 2, result.stderr
    assert len(result.error_lines) == 1, result.stderr
    assert result.error_lines[0].startswith("osbuilder") and fragment in result.error_lines[0]
    assert list(parent.iterdir()) == [], "something was left behind"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def rootfs_args(out: Path, agent: Path, *extra: str) -> list[str]:
    return ["-q", "rootfs", "--distro", "debian", "--init", "agent", "--agent", str(agent), "-o", str(out), *extra]


def test_unknown_distro(work, host_agent):
    args = rootfs_args(work / "out", host_agent)
    args[args.index("debian")] = "gentoo"
    assert_refused(run_cli(*args), "unknown distro 'gentoo'", work)


def test_unknown_arch(work, host_agent):
    assert_refused(run_cli(*rootfs_args(work / "out", host_agent, "--arch", "riscv64")), "argument --arch: invalid choice: 'riscv64'", work)


def test_agent_for_another_arch(work, host_agent):
    result = run_cli(*rootfs_args(work / "out", host_agent, "--arch", "aarch64"))
    assert_refused(result, "agent is x86_64, target is aarch64", work)


def test_missing_agent(work):
    assert_refused(run_cli(*rootfs_args(work / "out", work.parent / "no-agent")), "does not exist", work)


def test_agent_that_is_not_elf(work, tmp_path):
    script = tmp_path / "agent.sh"
    script.write_text("#!/bin/sh\nexec sleep 1\n")
    assert_refused(run_cli(*rootfs_args(work / "out", script)), "is not an ELF executable", work)


def test_init_mode_the_recipe_forbids(work, tmp_path, host_agent):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    text = (recipes_dir() / "debian.toml").read_text().replace('init_modes = ["agent", "systemd", "launcher"]', 'init_modes = ["agent"]')
    assert 'init_modes = ["agent"]' in text, "the recipe edit did not apply"
    (recipes / "debian.toml").write_text(text)
    args = rootfs_args(work / "out", host_agent, "--recipes-dir", str(recipes))
    args[args.index("agent", args.index("--init"))] = "systemd"
    assert_refused(run_cli(*args), "supports only init mode 'agent' (got 'systemd'); pass --init agent", work)


def test_output_root_is_refused(work, host_agent):
    assert_refused(run_cli(*rootfs_args(Path("/"), host_agent)), "refusing to write to system directory '/'", work)


def test_output_system_directory_is_refused(work, host_agent):
    assert_refused(run_cli(*rootfs_args(Path("/usr/lib"), host_agent)), "system directory '/usr/lib'", work)


def test_recipe_with_unknown_key(work, tmp_path, host_agent):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "debian.toml").write_text('colour = "blue"\n' + (recipes_dir() / "debian.toml").read_text())
    result = run_cli(*rootfs_args(work / "out", host_agent, "--recipes-dir", str(recipes)))
    assert_refused(result, f"recipe {recipes / 'debian.toml'}: unknown key 'colour'", work)


def test_non_empty_output_needs_force(work, host_agent):
    out = work / "out"
    out.mkdir()
    (out / "keep").write_text("mine")
    result = run_cli(*rootfs_args(out, host_agent))
    assert result.returncode == 2 and "pass --force" in result.stderr
    assert [p.name for p in work.iterdir()] == ["out"] and (out / "keep").read_text() == "mine"


def test_bad_flag_is_one_line(work):
    assert_refused(run_cli("rootfs", "--init", "sometimes"), "invalid choice", work)


def test_bad_source_date_epoch(work, host_agent):
    result = run_cli(*rootfs_args(work / "out", host_agent), env={"SOURCE_DATE_EPOCH": "yesterday"})
    assert_refused(result, "SOURCE_DATE_EPOCH must be a whole number", work)


@pytest.mark.parametrize("command,message", [("inspect", "ARTIFACT is required"), ("check", "nothing to check")])
def test_inspect_and_check_without_input_say_what_they_need(command, message, work):
    assert_refused(run_cli(command), message, work)


@pytest.mark.parametrize("command", ["build", "rootfs", "initrd", "image", "iso", "boot", "inspect", "check", "distros"])
def test_every_command_has_help(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0 and "usage: osbuilder" in result.stdout


def test_distros_lists_the_recipe_matrix():
    import json
    result = run_cli("distros", "--json")
    rows = json.loads(result.stdout)["combinations"]
    debian = [r for r in rows if r["distro"] == "debian"]
    assert {"distro": "debian", "arch": "s390x"}.items() <= next(r for r in debian if r["arch"] == "s390x").items()
    assert all({r["init_mode"] for r in debian if r["arch"] == arch and r["release"] == release}
               == {"agent", "systemd", "launcher"} for arch in ("x86_64", "s390x") for release in ("bookworm", "trixie"))
    table = run_cli("distros").stdout
    assert "debian" in table and "aarch64" in table


def test_distros_matrix_covers_every_recipe_release_arch_and_mode_with_its_proof():
    import json
    rows = json.loads(run_cli("distros", "--json").stdout)["combinations"]
    combos = {(r["distro"], r["release"], r["arch"], r["init_mode"]) for r in rows}
    assert len(combos) == len(rows)
    assert ("alpine", "3.22", "aarch64", "agent") in combos and ("alpine", "3.22", "x86_64", "systemd") not in combos
    assert not any(r["distro"] == "alpine" and r["arch"] in ("ppc64le", "s390x") for r in rows)
    assert ("centos", "stream10", "s390x", "systemd") in combos and ("cbl-mariner", "3.0", "x86_64", "agent") in combos
    assert {r["distro"] for r in rows} == {"alpine", "cbl-mariner", "centos", "debian", "fedora", "ubuntu"}
    proven = {r["distro"]: r["proven"] for r in rows}
    assert proven["debian"] == "mirror" and {proven[d] for d in proven if d != "debian"} == {"local-repository"}
    assert [r["default_release"] for r in rows if r["distro"] == "ubuntu" and r["release"] == "resolute"] == [True] * 12
    assert next(r for r in rows if r["distro"] == "ubuntu" and r["arch"] == "s390x")["mirror"] == \
        "http://ports.ubuntu.com/ubuntu-ports"
    assert next(r for r in rows if r["distro"] == "cbl-mariner")["aliases"] == ["azurelinux"]
    table = run_cli("distros").stdout
    assert "cbl-mariner (azurelinux)" in table and "resolute *" in table and "--method dracut" in table
