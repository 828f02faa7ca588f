"""The shape the code must keep: no import cycles (function-local imports counted), choices
taken from the registries, settings declared once."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import osbuilder
from osbuilder.cli import make_parser
from osbuilder.pack.iso import IsoPacker
from osbuilder.pack.registry import PACKERS

PACKAGE = Path(osbuilder.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, this: str, is_package: bool, modules: set[str]) -> set[str]:
    """Every osbuilder module the module `this` imports anywhere in its body (function-local
    imports too), with the packages that importing it runs first. The module's own ancestor
    packages are left out: they are already initialising when it runs."""
    found: set[str] = set()
    package = this if is_package else this.rpartition(".")[0]
    ancestors = {".".join(this.split(".")[:i]) for i in range(1, len(this.split(".")))}
    for node in ast.walk(ast.parse(source)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            while target:
                if target in modules and target != this and target not in ancestors:
                    found.add(target)
                target = target.rpartition(".")[0]
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports_of(path.read_text(), name, path.name == "__init__.py", set(files))
            for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 40, "the walk missed the package's modules"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_a_function_local_import_that_closes_a_cycle_is_found():
    modules = {"osbuilder", "osbuilder.a", "osbuilder.b", "osbuilder.pkg", "osbuilder.pkg.c"}
    graph = {
        "osbuilder.a": imports_of("import osbuilder.b\n", "osbuilder.a", False, modules),
        "osbuilder.b": imports_of("def f():\n    from osbuilder import a\n", "osbuilder.b", False, modules),
    }
    assert graph["osbuilder.b"] == {"osbuilder.a"}
    assert find_cycle(graph) == ["osbuilder.a", "osbuilder.b", "osbuilder.a"]
    # A package's __init__ importing its own submodule is no cycle; a relative import is resolved.
    inner = imports_of("from . import c\n", "osbuilder.pkg", True, modules)
    assert inner == {"osbuilder.pkg.c"}
    assert imports_of("from osbuilder.pkg import x\n", "osbuilder.pkg.c", False, modules) == set()


def choices_of(command: str, flag: str) -> tuple[str, ...] | None:
    parser = make_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    action = next(a for a in sub._actions if flag in a.option_strings)
    return tuple(action.choices) if action.choices else None


class ExtraPacker(IsoPacker):
    """A format the catalog can load (its line names this module), as a new packer's would."""

    name = "squashfs-test"


def test_format_choices_come_from_the_packer_registry(monkeypatch):
    # Unregistered, the name is refused: the choices are checked, not taken as typed.
    for argv in (["build", "--format", "initrd,squashfs-test"], ["squashfs-test", "tree", "-o", "x"]):
        with pytest.raises(SystemExit) as refused:
            make_parser().parse_args(argv)
        assert refused.value.code == 2
    # Registered (its catalog line, and the registry's packer that the catalog names):
    from osbuilder.pack.catalog import PACKER_CATALOG, PackerEntry

    monkeypatch.setitem(PACKER_CATALOG, ExtraPacker.name, PackerEntry(__name__, "ExtraPacker", "a test format"))
    monkeypatch.setitem(PACKERS, ExtraPacker.name, ExtraPacker())
    args = make_parser().parse_args(["build", "--format", "initrd,squashfs-test"])
    assert args.formats == ("initrd", "squashfs-test")
    assert "squashfs-test" in make_parser().parse_args(["squashfs-test", "tree", "-o", "x"]).command


@pytest.mark.parametrize("command,flag,registry", [
    ("initrd", "--compression", "osbuilder.pack.compress:CODECS"),
    ("image", "--fs", "osbuilder.pack.fs:FILESYSTEMS"),
    ("build", "--fs", "osbuilder.pack.fs:FILESYSTEMS"),
    ("rootfs", "--arch", "osbuilder.foundation.arch:ARCHES"),
    ("image", "--arch", "osbuilder.foundation.arch:ARCHES"),
    ("rootfs", "--init", "osbuilder.rootfs.initmode:INIT_MODES"),
])
def test_choices_come_from_registries(command, flag, registry):
    import importlib

    module, _, name = registry.partition(":")
    assert choices_of(command, flag) == tuple(getattr(importlib.import_module(module), name))


def test_every_command_takes_json_and_verbosity_after_the_subcommand():
    parser = make_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    for name, command in sub.items():
        flags = {flag for action in command._actions for flag in action.option_strings}
        assert {"--json", "-v", "-q"} <= flags, name
    assert parser.parse_args(["distros", "-v"]).verbose is True
    assert parser.parse_args(["-v", "distros"]).verbose is True
    assert parser.parse_args(["distros", "-q"]).quiet is True


def setting_declarations(source: str) -> list[tuple[str, str, int]]:
    """(flag, class, line) of every setting(...) field declared in a module's classes; a
    positional setting is keyed by its field name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
                    and isinstance(item.value, ast.Call) and getattr(item.value.func, "id", None) == "setting"):
                continue
            keywords = {k.arg: k.value for k in item.value.keywords}
            name = item.target.id
            if isinstance(keywords.get("positional"), ast.Constant) and keywords["positional"].value:
                key = name
            elif isinstance(keywords.get("flag"), ast.Constant):
                key = keywords["flag"].value
            else:
                key = "--" + name.replace("_", "-")
            found.append((key, node.name, item.lineno))
    return found


def test_every_flag_is_declared_once():
    declared: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for key, cls, line in setting_declarations(path.read_text()):
            declared.setdefault(key, []).append(f"{module_name(path)}.{cls} (line {line})")
    assert len(declared) > 50, "the walk missed the settings"
    twice = {key: where for key, where in declared.items() if len(where) > 1}
    assert not twice, f"flags declared more than once (share one declaration instead): {twice}"


def test_a_flag_declared_twice_is_found():
    source = ("class A:\n    arch: str = setting(None, help='x')\n"
              "class B:\n    arch: str = setting(None, help='y')\n    out: str = setting(flag='--output')\n"
              "    artifact: str = setting(positional=True)\n")
    keys = [key for key, _, _ in setting_declarations(source)]
    assert keys == ["--arch", "--arch", "--output", "artifact"]


def named_things() -> dict[str, set[str]]:
    """Each init mode's and each packer's name, with the modules allowed to spell it."""
    import inspect as pyinspect

    from osbuilder.rootfs.initmode import INIT_MODES

    owners: dict[str, set[str]] = {}
    for name in INIT_MODES:
        owners.setdefault(name, set()).add("osbuilder.rootfs.initmode")
    for name, packer in PACKERS.items():
        owners.setdefault(name, set()).add(pyinspect.getmodule(type(packer)).__name__)
    return owners


def literal_comparisons(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) of every ==, !=, in or not in that compares with one of `names` spelled
    as a string literal (alone, or in a literal tuple, list or set)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        if not any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops):
            continue
        for side in [node.left, *node.comparators]:
            items = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
            for item in items:
                if isinstance(item, ast.Constant) and item.value in names:
                    found.append((node.lineno, item.value))
    return found


def test_no_module_compares_a_mode_or_format_name_it_does_not_define():
    owners = named_things()
    assert {"agent", "systemd", "launcher", "initrd", "image", "iso"} <= set(owners)
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        for line, name in literal_comparisons(path.read_text(), set(owners)):
            if module not in owners[name]:
                offences.append(f"{module}:{line} compares with '{name}'")
    assert not offences, "ask the init mode or the packer instead: " + "; ".join(offences)


def test_a_literal_name_comparison_is_found():
    source = ("if mode == 'systemd': pass\nif kind in ('image', 'other'): pass\n"
              "if kind != 'iso' and x: pass\nif kind == IMAGE: pass\nd = {'image': 1}\n")
    assert literal_comparisons(source, {"systemd", "image", "iso"}) == [(1, "systemd"), (2, "image"), (3, "iso")]


# The layers, lowest first (docs/design.md): a module may import its own layer and those
# below, never one above. A top-level module that is not named here is a command.
LAYERS = (
    ("foundation", ("osbuilder", "osbuilder.foundation")),
    ("stages", ("osbuilder.rootfs", "osbuilder.pack", "osbuilder.read", "osbuilder.boot")),
    ("host and release", ("osbuilder.host", "osbuilder.release")),
    ("commands", ()),
    ("cli", ("osbuilder.cli", "osbuilder.__main__")),
)


def layer_of(module: str) -> int:
    best, rank = "", None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, rank = prefix, index
    if best in ("", "osbuilder") and module.count(".") == 1:  # a top-level module
        return 3
    assert rank is not None, f"{module} is in no layer: add its package to LAYERS"
    return rank


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
                  for module, targets in graph.items() for target in targets if layer_of(target) > layer_of(module))


def test_no_module_imports_from_a_layer_above_its_own():
    graph = import_graph()
    assert {layer_of(m) for m in graph} == set(range(len(LAYERS))), "a layer is empty"
    assert layering_violations(graph) == []


def test_a_layering_violation_is_found():
    graph = {"osbuilder.foundation.runner": {"osbuilder.pack.compress"}, "osbuilder.pack.compress": {"osbuilder.foundation.runner"},
             "osbuilder.build": {"osbuilder.cli"}, "osbuilder.host.findings": {"osbuilder.check"}}
    assert layering_violations(graph) == [
        "osbuilder.build (commands) imports osbuilder.cli (cli)",
        "osbuilder.foundation.runner (foundation) imports osbuilder.pack.compress (stages)",
        "osbuilder.host.findings (host and release) imports osbuilder.check (commands)"]


def privilege_decisions(source: str) -> list[tuple[int, str]]:
    """(line, what) of each place a module asks who it runs as, or spells how to run as
    someone else: the kernel's ids, fakeroot's mark, a user namespace."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in ("geteuid", "getuid", "getgid", "getegid"):
            found.append((node.lineno, node.attr))
        elif isinstance(node, ast.Constant) and node.value in ("OSBUILDER_FAKEROOT", "unshare", "fakeroot"):
            found.append((node.lineno, node.value))
    return found


def test_only_the_privilege_object_decides_privilege():
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if module_name(path) == "osbuilder.foundation.privilege":
            continue
        offences += [f"{module_name(path)}:{line} {what}" for line, what in privilege_decisions(path.read_text())]
    assert offences == [], "ask the Privilege on the runner instead: " + "; ".join(offences)
    from osbuilder.foundation import privilege

    assert privilege_decisions(Path(privilege.__file__).read_text()), "the walk finds nothing"
