"""Distribution recipes: `distros/*.toml`, validated strictly on load.

A recipe is data: package lists, mirror, releases, allowed init modes and arches, and the
guest paths that differ between distributions. The common schema holds only what every
package manager and init system shares; the backend named in the recipe validates its own
table (e.g. `[apt]`), and per-init-mode packages live under `[packages.init]`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osbuilder.foundation.arch import ARCHES
from osbuilder.foundation.errors import UserError
from osbuilder.rootfs.initmode import INIT_MODES, get_init_mode
from osbuilder.foundation.resources import recipes_dir
from osbuilder.rootfs.backends import Backend, get_backend
from osbuilder.rootfs.recipe_values import (NAME_FORM, PACKAGE_FORM, PATTERN_FORM, check_mirror,  # noqa: F401
                                           check_plain_name)


@dataclass(frozen=True)
class TrustStore:
    """The distribution's CA trust store ([trust]): the package that ships the bundle, the
    bundle applications read, and the directory its own tools take local CAs from."""

    packages: tuple[str, ...]
    bundle: str
    anchors: str


@dataclass(frozen=True)
class Recipe:
    path: Path
    name: str
    description: str
    backend: Backend
    backend_section: Any  # the backend's own dataclass, parsed from the recipe's [<backend>] table
    default_release: str
    releases: tuple[str, ...]
    mirror: str
    arch_mirrors: dict[str, str]
    init_modes: tuple[str, ...]
    arches: tuple[str, ...]
    packages_always: tuple[str, ...]
    packages_init: dict[str, tuple[str, ...]]
    packages_seccomp: tuple[str, ...]
    packages_arch: dict[str, tuple[str, ...]]
    remove_paths: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    proven: str = "mirror"
    tools: tuple[str, ...] = ()  # commands the guest must have
    slim_packages: tuple[str, ...] = ()  # --slim: packages whose files go (fnmatch patterns)
    slim_paths: tuple[str, ...] = ()  # --slim: guest paths and globs that go
    trust: TrustStore | None = None  # None: the recipe names no CA package
    agent_libc: str | None = None  # [agent] libc: the C library Kata's release builds its agent with here

    def packages_for(self, arch: str, init_mode: str, seccomp: bool, ca_certificates: bool = False) -> tuple[str, ...]:
        """The recipe's own package set for one target, in declaration order. An extension
        image takes none of it: its packages are the ones it is given (--extra-packages)."""
        if not get_init_mode(init_mode).holds_agent:
            return ()
        chosen = list(self.packages_always)
        chosen += self.packages_init.get(init_mode, ())
        if seccomp:
            chosen += self.packages_seccomp
        chosen += self.packages_arch.get(arch, ())
        if ca_certificates and self.trust is not None:
            chosen += self.trust.packages
        return tuple(dict.fromkeys(chosen))

    def mirror_for(self, arch: str) -> str:
        return self.arch_mirrors.get(arch, self.mirror)


# How a recipe is proven on the test machines: installed from its real mirror, or (where the
# mirror is out of reach) by running the real installer against local signed repositories.
PROOFS = {
    "mirror": "its real mirror, in the test suite",
    "local-repository": "local signed repositories only (its mirror is out of the test machines' reach)",
    "none": "not exercised by osbuilder's tests (a recipe of your own)",
}

# Schema: key -> (type, required). Nested tables are dicts of the same shape; "*" matches any key.
STR_LIST = "list of strings"
_SCHEMA: dict[str, Any] = {
    "name": (str, True),
    "description": (str, False),
    "aliases": (STR_LIST, False),
    "proven": (str, False),
    "backend": (str, True),
    "default_release": (str, True),
    "releases": (STR_LIST, True),
    "mirror": (str, True),
    "arch_mirrors": ({"*": (str, False)}, False),
    "init_modes": (STR_LIST, True),
    "arches": (STR_LIST, True),
    "packages": ({
        "always": (STR_LIST, True),
        "init": ({"*": (STR_LIST, False)}, False),
        "seccomp": (STR_LIST, False),
        "arch": ({"*": (STR_LIST, False)}, False),
    }, True),
    "guest": ({
        "remove": (STR_LIST, False),
        "tools": (STR_LIST, False),
    }, False),
    "slim": ({
        "packages": (STR_LIST, False),
        "paths": (STR_LIST, False),
    }, False),
    "trust": ({
        "packages": (STR_LIST, True),
        "bundle": (str, True),
        "anchors": (str, True),
    }, False),
    "agent": ({
        "libc": (str, False),
    }, False),
}
AGENT_LIBCS = ("gnu", "musl")
def check_table(path: Path, table: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> None:
    """Every key known and of its type, every required key present; errors name file and key."""
    for key, value in table.items():
        spec = schema.get(key, schema.get("*"))
        dotted = f"{prefix}{key}"
        if spec is None:
            known = ", ".join(k for k in schema if k != "*")
            raise UserError(f"recipe {path}: unknown key '{dotted}'", f"remove it or use one of: {known}")
        kind, _ = spec
        if isinstance(kind, dict):
            if not isinstance(value, dict):
                raise UserError(f"recipe {path}: key '{dotted}' must be a table", f"write it as [{dotted}]")
            check_table(path, value, kind, dotted + ".")
        elif kind == STR_LIST:
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise UserError(f"recipe {path}: key '{dotted}' must be a list of strings",
                                f'write it as {key} = ["..."]')
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise UserError(f"recipe {path}: key '{dotted}' must be a {kind.__name__}", "fix its value")
    for key, (kind, required) in schema.items():
        if required and key not in table:
            raise UserError(f"recipe {path}: missing required key '{prefix}{key}'", "add it to the recipe")


def parse_recipe(path: Path) -> Recipe:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"recipe {path}: invalid TOML ({exc})", "fix the syntax") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"recipe {path}: cannot be read ({exc})", "check the file") from None
    backend_name = data.get("backend")
    backend = get_backend(backend_name) if isinstance(backend_name, str) else None
    schema = dict(_SCHEMA)
    if backend is not None:
        schema[backend.name] = ({"*": (object, False)}, False)  # its own table, checked by the backend
    check_table(path, data, schema)
    assert backend is not None
    if data["name"] != path.stem:
        raise UserError(f"recipe {path}: name '{data['name']}' does not match the file name",
                        f"set name = \"{path.stem}\"")
    pkgs, guest = data["packages"], data.get("guest", {})
    for mode in data["init_modes"] + list(pkgs.get("init", {})):
        if mode not in INIT_MODES:
            raise UserError(f"recipe {path}: unknown init mode '{mode}'", f"use {' or '.join(INIT_MODES)}")
    for arch in data["arches"] + list(pkgs.get("arch", {})) + list(data.get("arch_mirrors", {})):
        if arch not in ARCHES:
            raise UserError(f"recipe {path}: unknown arch '{arch}'", f"use one of: {', '.join(ARCHES)}")
    if data.get("proven", "none") not in PROOFS:
        raise UserError(f"recipe {path}: unknown proven '{data['proven']}'", f"use {' or '.join(PROOFS)}")
    trust = data.get("trust")
    for key in ("bundle", "anchors"):
        if trust is not None and not trust[key].startswith("/"):
            raise UserError(f"recipe {path}: trust.{key} must be an absolute guest path", "fix its value")
    libc = data.get("agent", {}).get("libc")
    if libc is not None and libc not in AGENT_LIBCS:
        raise UserError(f"recipe {path}: agent.libc '{libc}' is not one of {', '.join(AGENT_LIBCS)}", "fix its value")
    for key, names, form in (
            ("name", [data["name"]], NAME_FORM), ("aliases", data.get("aliases", []), NAME_FORM),
            ("releases", data["releases"], NAME_FORM), ("packages.always", pkgs["always"], PACKAGE_FORM),
            ("packages.seccomp", pkgs.get("seccomp", []), PACKAGE_FORM),
            *((f"packages.init.{m}", v, PACKAGE_FORM) for m, v in pkgs.get("init", {}).items()),
            *((f"packages.arch.{a}", v, PACKAGE_FORM) for a, v in pkgs.get("arch", {}).items()),
            ("trust.packages", (data.get("trust") or {}).get("packages", []), PACKAGE_FORM),
            ("guest.tools", guest.get("tools", []), PACKAGE_FORM),
            ("slim.packages", data.get("slim", {}).get("packages", []), PATTERN_FORM)):
        for value in names:
            check_plain_name(f"recipe {path}", key, value, form)
    for arch, url in [("", data["mirror"]), *data.get("arch_mirrors", {}).items()]:
        check_mirror(f"recipe {path}: {'arch_mirrors.' + arch if arch else 'mirror'}", url)
    if data["default_release"] not in data["releases"]:
        raise UserError(f"recipe {path}: default_release '{data['default_release']}' is not in 'releases'",
                        "add it to releases")
    return Recipe(
        path=path,
        name=data["name"],
        description=data.get("description", data["name"]),
        backend=backend,
        backend_section=backend.parse_section(path, data.get(backend.name, {})),
        default_release=data["default_release"],
        releases=tuple(data["releases"]),
        mirror=data["mirror"],
        arch_mirrors=dict(data.get("arch_mirrors", {})),
        init_modes=tuple(data["init_modes"]),
        arches=tuple(data["arches"]),
        packages_always=tuple(pkgs["always"]),
        packages_init={mode: tuple(names) for mode, names in pkgs.get("init", {}).items()},
        packages_seccomp=tuple(pkgs.get("seccomp", ())),
        packages_arch={k: tuple(v) for k, v in pkgs.get("arch", {}).items()},
        remove_paths=tuple(guest.get("remove", ())),
        aliases=tuple(data.get("aliases", ())),
        tools=tuple(guest.get("tools", ())),
        slim_packages=tuple(data.get("slim", {}).get("packages", ())),
        slim_paths=tuple(data.get("slim", {}).get("paths", ())),
        proven=data.get("proven", "none"),
        trust=TrustStore(tuple(trust["packages"]), trust["bundle"], trust["anchors"]) if trust else None,
        agent_libc=libc,
    )


def available(directory: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (directory or recipes_dir()).glob("*.toml"))


def load_recipe(name: str, directory: Path | None = None) -> Recipe:
    directory = Path(directory) if directory else recipes_dir()
    if directory is not None and not directory.is_dir():
        raise UserError(f"recipes directory '{directory}' does not exist", "pass --recipes-dir an existing directory")
    path = directory / f"{_canonical_name(name, directory)}.toml"
    if "/" in name or not path.is_file():
        names = ", ".join(available(directory)) or "none"
        raise UserError(f"unknown distro '{name}'", f"use one of: {names}")
    return parse_recipe(path)


def _canonical_name(name: str, directory: Path) -> str:
    """A recipe's own name for `name`, which may be one of its aliases (azurelinux -> cbl-mariner)."""
    if "/" in name or (directory / f"{name}.toml").is_file():
        return name
    for stem in available(directory):
        try:
            aliases = tomllib.loads((directory / f"{stem}.toml").read_text()).get("aliases", [])
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue  # a broken recipe reports itself when it is asked for by name
        if isinstance(aliases, list) and name in aliases:
            return stem
    return name


def load_all(directory: Path | None = None) -> list[Recipe]:
    return [load_recipe(name, directory) for name in available(directory)]
