from pathlib import Path

import pytest

from osbuilder.config import make_rootfs_options as make_config
from osbuilder.foundation.errors import UserError
from osbuilder.rootfs.recipes import load_recipe, parse_recipe
from osbuilder.rootfs.bootstrap import install_request
from osbuilder.foundation.resources import recipes_dir

DEBIAN = (recipes_dir() / "debian.toml").read_text()


def write_recipe(tmp_path: Path, text: str, name: str = "debian") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_debian_recipe_package_sets():
    recipe = load_recipe("debian")
    agent = recipe.packages_for("x86_64", "agent", seccomp=True)
    systemd = recipe.packages_for("x86_64", "systemd", seccomp=False)
    assert "init" not in agent and "libseccomp2" in agent and "dbus" in agent
    assert "init" in systemd and "libseccomp2" not in systemd
    assert "libcurl4" in recipe.packages_for("s390x", "agent", seccomp=True)
    assert recipe.default_release == "bookworm" and "trixie" in recipe.releases


def test_unknown_key_names_file_and_key(tmp_path: Path):
    path = write_recipe(tmp_path, 'flavour = "vanilla"\n' + DEBIAN)
    with pytest.raises(UserError) as err:
        parse_recipe(path)
    assert str(path) in str(err.value) and "'flavour'" in str(err.value)


def test_unknown_nested_key_is_named_with_its_table(tmp_path: Path):
    path = write_recipe(tmp_path, DEBIAN.replace('seccomp = ["libseccomp2"]', 'seccomp = ["libseccomp2"]\nsecomp = []'))
    with pytest.raises(UserError, match=r"unknown key 'packages\.secomp'"):
        parse_recipe(path)


def test_missing_field_is_named(tmp_path: Path):
    path = write_recipe(tmp_path, DEBIAN.replace('mirror = "http://deb.debian.org/debian"\n', ""))
    with pytest.raises(UserError, match="missing required key 'mirror'"):
        parse_recipe(path)


def test_wrong_type_is_named(tmp_path: Path):
    path = write_recipe(tmp_path, DEBIAN.replace('components = ["main"]', 'components = "main"'))
    with pytest.raises(UserError, match="'apt.components' must be a list of strings"):
        parse_recipe(path)


def test_unknown_arch_in_recipe(tmp_path: Path):
    path = write_recipe(tmp_path, DEBIAN.replace('"s390x"]', '"s390x", "mips"]'))
    with pytest.raises(UserError, match="unknown arch 'mips'"):
        parse_recipe(path)


def test_forbidden_init_mode_is_refused_with_a_hint(tmp_path: Path, host_agent: Path):
    write_recipe(tmp_path, DEBIAN.replace('init_modes = ["agent", "systemd", "launcher"]', 'init_modes = ["agent"]'))
    with pytest.raises(UserError) as err:
        make_config({"distro": "debian", "init": "systemd", "agent": host_agent, "output": tmp_path / "o",
                     "recipes_dir": tmp_path})
    assert str(err.value) == "distro 'debian' supports only init mode 'agent' (got 'systemd'); pass --init agent"


def test_config_takes_recipe_defaults(tmp_path: Path, host_agent: Path):
    config, recipe = make_config({"distro": "debian", "init": "agent", "agent": host_agent,
                                  "output": tmp_path / "o", "arch": "arm64"})
    assert config.arch == "aarch64" and config.release == "bookworm"
    assert config.mirror == recipe.mirror and recipe.backend_section.components == ("main",)
    other, _ = make_config({"distro": "debian", "init": "systemd", "agent": host_agent, "output": tmp_path / "o"})
    # (RootfsOptions.digest was dead code; the cache keys trees by the install request.)
    assert install_request(other, recipe) != install_request(config, recipe)


def test_ubuntu_uses_the_archive_on_x86_64_and_ports_elsewhere():
    recipe = load_recipe("ubuntu")
    assert recipe.mirror_for("x86_64") == "http://archive.ubuntu.com/ubuntu"
    for arch in ("aarch64", "ppc64le", "s390x"):
        assert recipe.mirror_for(arch) == "http://ports.ubuntu.com/ubuntu-ports"
    assert (recipe.default_release, recipe.releases) == ("resolute", ("resolute", "noble", "jammy"))
    assert recipe.backend_section.keyring == "/usr/share/keyrings/ubuntu-archive-keyring.gpg"


def test_ubuntu_without_its_keyring_on_a_debian_host_exits_2_naming_keyring(tmp_path: Path):
    from tests.conftest import run_cli

    assert not Path("/usr/share/keyrings/ubuntu-archive-keyring.gpg").exists()  # a Debian 12 host
    result = run_cli("rootfs", "--distro", "ubuntu", "--init", "agent", "--probe-agent", "-o", tmp_path / "out")
    assert result.returncode == 2
    assert result.error_lines == ["osbuilder: error: keyring '/usr/share/keyrings/ubuntu-archive-keyring.gpg' does "
                                  "not exist; pass --keyring the ubuntu archive keyring (a .gpg or .asc file)"]
    assert not (tmp_path / "out").exists()
    missing = run_cli("rootfs", "--distro", "ubuntu", "--init", "agent", "--probe-agent", "--keyring",
                      tmp_path / "nope.gpg", "-o", tmp_path / "out")
    assert missing.returncode == 2 and f"keyring '{tmp_path / 'nope.gpg'}' does not exist" in missing.stderr


def test_a_relative_keyring_in_a_recipe_is_relative_to_the_recipe(tmp_path: Path):
    path = write_recipe(tmp_path, DEBIAN.replace('components = ["main"]', 'components = ["main"]\nkeyring = "k/a.gpg"'))
    assert parse_recipe(path).backend_section.keyring == str(tmp_path / "k" / "a.gpg")


def test_proven_must_be_a_known_kind(tmp_path: Path):
    path = write_recipe(tmp_path, DEBIAN.replace('proven = "mirror"', 'proven = "hope"'))
    with pytest.raises(UserError, match="unknown proven 'hope'"):
        parse_recipe(path)
