"""Command-line front end, generated from the settings and the registries: parse, merge the
--config file and the flags, call one function, map errors to exit codes."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path
import importlib
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Sequence

from osbuilder import __version__
from osbuilder.foundation.errors import (EXIT_BAD_INPUT, EXIT_BUILD_FAILED, EXIT_OK, BuildError, CommandError, InternalError,
                              Interrupted, OsbuilderError, Terminated, UserError)
from osbuilder.foundation.events import EventLogHandler, sink_from_environment
from osbuilder.foundation.progress import progress_for
from osbuilder.foundation.privilege import Privilege
from osbuilder.foundation.runner import Runner
from osbuilder.foundation.settings import (add_arguments, build_options, to_argv, values_from_args, values_from_file,
                                values_from_mapping)
from osbuilder.pack.catalog import PACKER_CATALOG

if TYPE_CHECKING:
    from osbuilder.config import BuildConfig
    from osbuilder.matrix import MatrixFile
    from osbuilder.rootfs.recipes import Recipe

log = logging.getLogger("osbuilder")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that says where to look."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def _named(module: str, *names: str) -> tuple[type, ...]:
    loaded = importlib.import_module(module)
    return tuple(getattr(loaded, name) for name in names)


def _pipeline(command: str) -> tuple[type, ...]:
    from osbuilder.config import command_settings

    return command_settings()[command]


def _packer(command: str) -> tuple[type, ...]:
    from osbuilder.pack.source import pack_settings

    return pack_settings(command)


# The option classes of every command that takes settings, each imported only when its command
# is chosen (or when a --config file's keys are checked against every command's).
SETTINGS: dict[str, Callable[[], tuple[type, ...]]] = {
    "build": lambda: (*_pipeline("build"), *_named("osbuilder.matrix", "MatrixOptions")),
    "rootfs": lambda: _pipeline("rootfs"),
    "boot": lambda: _named("osbuilder.boot.options", "BootRequest"),
    "distros": lambda: _named("osbuilder.rootfs.options", "RecipeSource"),
    "matrix": lambda: _named("osbuilder.matrix", "MatrixPrint"),
    "inspect": lambda: (*_named("osbuilder.inspect_cli", "InspectOptions"),
                        *_named("osbuilder.host.runtime_fragment", "FragmentOptions")),
    "check": lambda: _named("osbuilder.inspect_cli", "CheckOptions"),
    "cache": lambda: _named("osbuilder.foundation.cache", "CacheOptions"),
}


def takes_settings(command: str) -> bool:
    return command in SETTINGS or command in PACKER_CATALOG


def settings_of(command: str) -> tuple[type, ...]:
    """A command's option classes; a packer command's are its own packer's (pack/source.py)."""
    return _packer(command) if command in PACKER_CATALOG else SETTINGS[command]()


def settings() -> dict[str, tuple[type, ...]]:
    """The option classes of every command that takes settings (all of them imported)."""
    return {name: settings_of(name) for name in commands() if takes_settings(name)}


def commands() -> dict[str, str]:
    """Every subcommand and its help; the packers' come from their catalog."""
    return {
        "build": "run the whole pipeline: rootfs, then the artifacts (" + ", ".join(PACKER_CATALOG) + ")",
        "rootfs": "bootstrap and provision a guest root filesystem directory",
        **{name: entry.help for name, entry in PACKER_CATALOG.items()},
        "boot": "boot an artifact under qemu and check the guest's report",
        "inspect": "print how an artifact was built and what it holds (init mode, cgroup driver, agent, layout), "
                   "verified where possible",
        "check": "check an artifact against a host's runtime, containerd, CRI-O and kubelet settings",
        "distros": "list the supported distribution x arch x init-mode combinations",
        "cache": "list or clean the build cache (bootstrapped trees and downloaded packages)",
        "matrix": "list the targets of a --config file of [[target]] tables, or print them as a GitHub Actions "
                  "matrix (--github)",
    }


GLOBAL_SWITCHES = ("-v", "--verbose", "-q", "--quiet", "--json")


def chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand an argument list names (after the switches any command takes), or None
    (`osbuilder --help`, a typo: argparse then says what is wrong)."""
    for arg in argv:
        if arg in GLOBAL_SWITCHES:
            continue
        return arg if arg in commands() else None
    return None


def _add_common(command: argparse.ArgumentParser, takes_config: bool) -> None:
    # SUPPRESS: given before the subcommand, the value stands unless repeated after it.
    command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="log every command and its output")
    command.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                         help="log only warnings and errors")
    command.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                         help="print the result as JSON on stdout")
    if takes_config:
        command.add_argument("--config", metavar="FILE.toml", type=Path,
                             help="read settings from a TOML file whose keys are these flags' names "
                                  "(flags given here win)")


def make_parser(only: str | None = "") -> argparse.ArgumentParser:
    """The command line. `only`: give flags to that command alone (the one main runs, so no
    other command's settings are imported); None: to none; the default "": to every command."""
    parser = OneLineParser(prog="osbuilder", description="Build guest operating systems for VM sandboxes.")
    parser.add_argument("--version", action="version", version=f"osbuilder {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every command and its output")
    parser.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for name, help_text in commands().items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        _add_common(command, takes_config=takes_settings(name))
        if takes_settings(name) and only in ("", name):
            add_arguments(command, settings_of(name))
    return parser


def settings_values(args: argparse.Namespace) -> dict[str, Any]:
    """The command's settings: the --config file's, then the flags' on top."""
    classes = settings_of(args.command)
    values = {}
    if args.config:  # its keys are checked against every command's settings
        every = tuple(dict.fromkeys(c for cs in settings().values() for c in cs))
        values = values_from_file(args.config, classes, every)
    values.update(values_from_args(args, classes))
    return values


def emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def cmd_build(args: argparse.Namespace, runner: Runner) -> int:
    from osbuilder.config import make_config
    from osbuilder.foundation.tools import HostTools
    from osbuilder.build import run_build
    from osbuilder.matrix import is_matrix_file, load_matrix

    if args.config is not None and is_matrix_file(args.config):
        if args.target is None:
            return cmd_build_matrix(args)
        values = matrix_target_values(load_matrix(args.config), args.target, values_from_args(args, _build_classes()))
    else:
        for flag, given in (("--jobs", args.jobs), ("--fail-fast", args.fail_fast), ("--target", args.target)):
            if given:
                raise UserError(f"{flag} applies to a --config file of [[target]] tables", f"drop {flag}")
        values = settings_values(args)
    config, recipe = make_config(values)
    if args.target is not None:  # -o names the matrix's directory, made here as a matrix build would
        root = Path(values["output"]).parent
        if not root.is_dir() and root.parent.is_dir():
            root.mkdir()
    result = run_build(config, recipe, HostTools.probe(), runner, command=["osbuilder", *sys.argv[1:]])
    lines = [f"{a.format}: {a.path} ({a.size} bytes, sha256 {a.sha256})" for a in result.artifacts]
    lines.append(f"manifest: {result.output / 'manifest.json'} (init mode {result.summary.init_mode}, "
                 f"cgroup driver {result.summary.cgroup_driver})")
    provenance = None
    if result.provenance_sha256 is not None:
        from osbuilder.release.provenance import PROVENANCE_NAME

        provenance = {"path": str(result.output / PROVENANCE_NAME), "sha256": result.provenance_sha256}
        lines.append(f"provenance: {provenance['path']} (sha256 {provenance['sha256']}, the digest to sign)")
    emit(args, {"output": str(result.output), "manifest": str(result.output / "manifest.json"),
                "init_mode": result.summary.init_mode, "cgroup_driver": result.summary.cgroup_driver,
                "artifacts": [a.as_json() for a in result.artifacts], "provenance": provenance}, "\n".join(lines))
    return EXIT_OK


def _build_classes() -> tuple[type, ...]:
    return _pipeline("build")


def matrix_target_values(matrix: MatrixFile, name: str, flags: dict[str, Any]) -> dict[str, Any]:
    """One target's settings: [defaults], its table, then the command line's `flags`; its
    output is OUT/NAME."""
    target = matrix.target(name)
    if "output" in target.table:
        raise UserError(f"config file {matrix.path}: target '{name}' sets output",
                        "drop it: each target is written to <-o>/<name>/")
    every = tuple(dict.fromkeys(c for cs in settings().values() for c in cs))
    values = values_from_mapping(target.table, f"{matrix.path} (target '{name}')", _build_classes(), every)
    values.update(flags)
    if values.get("output") is None:
        raise UserError("-o is required", "pass -o DIR: each target is written to DIR/<name>/")
    values["output"] = Path(values["output"]) / name
    return resolve_target_references(matrix, name, values, flags)


def resolve_target_references(matrix: MatrixFile, name: str, values: dict[str, Any],
                              flags: dict[str, Any]) -> dict[str, Any]:
    """A `base` or `with-extension` image that names another target becomes the path where that
    target's build puts the artifact a runtime names (OUT/<target>/...): the matrix builds it
    first, and a job of its own finds it there once that target's output is in place."""
    from osbuilder.config import make_config
    from osbuilder.build import planned_runtime_artifact
    from osbuilder.matrix import dependency_order
    from osbuilder.rootfs.initmode import get_init_mode

    depends = {n: matrix.dependencies(n) for n in matrix.names}
    dependency_order(list(matrix.names), depends, matrix.path)  # refuses a cycle before resolving one
    if not depends[name]:
        return values
    planned = {}
    for dependency in depends[name]:
        config, recipe = make_config(matrix_target_values(matrix, dependency, flags))
        path = planned_runtime_artifact(config, recipe)
        if path is None:
            raise UserError(f"config file {matrix.path}: target '{name}' reads target '{dependency}', which "
                            "builds no image or initrd", f"give '{dependency}' format = [\"image\"]")
        planned[dependency] = (config, path)
    if values.get("base") is not None and str(values["base"]) in planned:
        values["base"] = planned[str(values["base"])][1]
    resolved = []
    for entry in values.get("with_extension", ()):
        extension, sep, image = entry.partition("=")
        if sep and image in planned:
            config, path = planned[image]
            if get_init_mode(config.rootfs.init).holds_agent:
                raise UserError(f"config file {matrix.path}: target '{name}' has with-extension {entry}, but target "
                                f"'{image}' is not an extension image", f'give \'{image}\' init = "none" and '
                                f'extension = "{extension}"')
            entry = f"{extension}={path}"
        resolved.append(entry)
    if "with_extension" in values:
        values["with_extension"] = tuple(resolved)
    return values


def cmd_build_matrix(args: argparse.Namespace) -> int:
    from osbuilder.config import make_config
    from osbuilder.matrix import MatrixOptions
    from osbuilder.matrix import (MatrixBuild, MatrixDisplay, bootstrap_first, load_matrix, summary_table,
                                  write_summary)
    from osbuilder.foundation.staging import check_output_dir

    matrix = load_matrix(args.config)
    flags = values_from_args(args, _build_classes())
    options = build_options(MatrixOptions, values_from_args(args, (MatrixOptions,)))
    # Every target is checked before any is built: bad input stops the matrix with exit 2.
    bootstraps = {}
    for target in matrix.targets:
        config, recipe = make_config(matrix_target_values(matrix, target.name, flags))
        bootstraps[target.name] = bootstrap_identity(config, recipe) or target.name
    output = Path(flags["output"])
    if output.is_dir():
        for target in matrix.targets:
            check_output_dir(output / target.name, bool(flags.get("force")))
    else:
        check_output_dir(output, False)
    passed = to_argv({k: v for k, v in flags.items() if k != "output"}, _build_classes())
    quiet = getattr(args, "quiet", False)
    build = MatrixBuild(matrix, output, options.jobs, options.fail_fast, passed,
                        lambda runs: MatrixDisplay(sys.stderr, runs, enabled=not quiet),
                        start_order=bootstrap_first([t.name for t in matrix.targets], bootstraps),
                        depends={t.name: matrix.dependencies(t.name) for t in matrix.targets})
    runs = build.run()
    data = write_summary(runs, output)
    emit(args, data, summary_table(runs, output))
    return EXIT_BUILD_FAILED if data["failed"] else EXIT_OK


def bootstrap_identity(config: BuildConfig, recipe: Recipe) -> str | None:
    """What decides a target's cached bootstrap (None: it bootstraps nothing it could share)."""
    from osbuilder.rootfs.bootstrap import install_request

    if not config.rootfs.installs_packages or config.rootfs.cache_dir is None:
        return None
    return json.dumps(install_request(config.rootfs, recipe).identity(), sort_keys=True, default=str)


def cmd_matrix(args: argparse.Namespace, runner: Runner) -> int:
    from osbuilder.config import make_config
    from osbuilder.matrix import DEFAULT_MATRIX_OUTPUT, MatrixPrint
    from osbuilder.matrix import load_matrix, target_command

    options = build_options(MatrixPrint, values_from_args(args, (MatrixPrint,)))
    if args.config is None:
        raise UserError("--config is required", "pass --config FILE.toml with [[target]] tables")
    matrix = load_matrix(args.config)
    output = options.output or DEFAULT_MATRIX_OUTPUT
    include = []
    for target in matrix.targets:
        config, _ = make_config(matrix_target_values(matrix, target.name, {"output": output}))
        command = ["osbuilder", *target_command(args.config, target.name, output)]
        include.append({"name": target.name, "distro": config.rootfs.distro, "release": config.rootfs.release,
                        "arch": config.rootfs.arch, "init": config.rootfs.init, "format": ",".join(config.formats),
                        "needs": list(matrix.dependencies(target.name)), "command": shlex.join(command)})
    if options.github:
        print(json.dumps({"include": include}, separators=(",", ":")))
    else:
        width = max(len(t["name"]) for t in include)
        emit(args, {"include": include}, "\n".join(
            f"{t['name']:<{width}}  {t['distro']} {t['release']} {t['arch']} {t['init']} {t['format']}: "
            f"{t['command']}" for t in include))
    return EXIT_OK


def cmd_rootfs(args: argparse.Namespace, runner: Runner) -> int:
    from osbuilder.config import OutputOptions, make_rootfs_options
    from osbuilder.rootfs.stage import build_rootfs

    values = settings_values(args)
    options, recipe = make_rootfs_options(values)
    output = build_options(OutputOptions, values)
    result = build_rootfs(options, recipe, output.output, output.force, runner)
    emit(args, {"rootfs": str(result.path), "distro": recipe.name, "release": options.release, "arch": options.arch,
                "init_mode": result.summary.init_mode, "cgroup_driver": result.summary.cgroup_driver,
                "agent": {"sha256": result.agent.sha256, "probe": result.agent.probe} if result.agent else None,
                "extension": result.summary.extension.as_json() if result.summary.extension else None},
         f"rootfs: {result.path} (init mode {result.summary.init_mode}, "
         f"cgroup driver {result.summary.cgroup_driver})")
    return EXIT_OK


def cmd_pack(args: argparse.Namespace, runner: Runner) -> int:
    """initrd, image, iso: one packer of an existing tree, its sidecars beside the artifact."""
    from osbuilder.foundation.tools import HostTools
    from osbuilder.foundation.cache import default_cache_dir
    from osbuilder.foundation.verified import VerifiedTrees
    from osbuilder.pack.base import PackContext
    from osbuilder.pack.guest_tree import open_guest_tree
    from osbuilder.pack.source import OutputOptions, PackSource, extension_defaults, extension_variant
    from osbuilder.read.base_tree import base_view
    from osbuilder.foundation.staging import StagedFile, check_output_file, work_directory

    packer = PACKER_CATALOG[args.command].load()
    values = settings_values(args)
    source = build_options(PackSource, values)
    target = build_options(OutputOptions, values)
    # The output is checked before the tree is read: a bad -o is the cheaper mistake to report.
    output = check_output_file(target.output, target.force)
    with tempfile.TemporaryDirectory(prefix="osbuilder-base-") as scratch:
        with base_view(source.base, Path(scratch), runner) as base:
            tree = open_guest_tree(source.rootfs, source.init, source.arch, runner.privilege, base,
                                   VerifiedTrees(source.cache_dir or default_cache_dir()))
    if source.base is not None and tree.mode.holds_agent:
        raise UserError("--base applies to an extension image (a tree built with --init none)", "drop --base")
    extension = tree.extension_name
    options = build_options(packer.Options, extension_defaults(values) if extension else values)
    if extension:
        options = packer.as_extension(options, extension_variant(extension))
    packer.validate(options)
    with work_directory(output) as work, StagedFile(output) as staged:
        artifact = packer.pack(tree, staged, options, PackContext(runner, HostTools.probe(), work))
        for name, text in artifact.sidecars.items():
            with StagedFile(output.with_name(name)) as staged_sidecar:
                staged_sidecar.write_text(text)
    what = packer.describe(artifact)
    data = artifact.as_json()
    data.update(path=str(output), cgroup_driver=tree.cgroup_driver, arch=tree.arch.name,
                sidecars=[str(output.with_name(name)) for name in sorted(artifact.sidecars)])
    emit(args, data, f"{packer.name}: {output} ({artifact.size} bytes{', ' + what if what else ''}, "
                     f"init mode {tree.init_mode}, cgroup driver {tree.cgroup_driver})")
    return EXIT_OK


def _probe_value(value: Any) -> str:
    """A probe field as the guest printed it: booleans in lower case, extensions as NAME:FILES."""
    from osbuilder.rootfs.probe import NO_EXTENSIONS

    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return ",".join(f"{name}:{files}" for name, files in value.items()) or NO_EXTENSIONS
    return str(value)


def cmd_boot(args: argparse.Namespace, runner: Runner) -> int:
    from osbuilder.boot.options import BootRequest
    from osbuilder.boot.session import boot_artifact
    from osbuilder.foundation.fsutil import check_output_path
    from osbuilder.foundation.staging import StagedFile
    from osbuilder.foundation.templates import Templates

    request = build_options(BootRequest, settings_values(args))
    if request.console_log is not None:
        check_output_path(request.console_log, "--console-log")
    result = boot_artifact(request, runner, Templates())
    if request.console_log is not None:
        with StagedFile(request.console_log) as staged:
            staged.write_text(result.console)
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
    elif result.ok:
        how = f"{result.accel}, {'PVH vmlinux' if result.pvh else 'kernel as given'}"
        print(f"boot: OK in {result.seconds:.1f} s ({how}{', ' + result.device if result.device else ''})")
        if result.probe:
            print("probe: " + " ".join(f"{k}={_probe_value(v)}" for k, v in result.probe.items()))
    if not result.ok:
        print(f"osbuilder: boot failed ({result.outcome}): {result.reason}", file=sys.stderr)
        print("--- console tail ---\n" + result.console_tail, file=sys.stderr)
        return EXIT_BUILD_FAILED
    return EXIT_OK


def cmd_distros(args: argparse.Namespace, runner: Runner) -> int:
    from osbuilder.rootfs.options import RecipeSource
    from osbuilder.distros import matrix, matrix_json, matrix_table

    rows = matrix(build_options(RecipeSource, settings_values(args)).recipes_dir)
    print(json.dumps(matrix_json(rows), indent=2) if args.json else matrix_table(rows))
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace, runner: Runner) -> int:
    from osbuilder.host.runtime_fragment import FragmentOptions
    from osbuilder.inspect_cli import InspectOptions
    import tempfile

    from osbuilder.host.findings import has_errors
    from osbuilder.inspect import inspect_many
    from osbuilder.inspect_cli import as_json, describe
    from osbuilder.updates import add_updates
    from osbuilder.host.runtime_fragment import fragment_for_report
    from osbuilder.foundation.staging import StagedFile
    from osbuilder.foundation.templates import Templates

    values = settings_values(args)
    options = build_options(InspectOptions, values)
    if options.runtime_config_fragment is not None:
        from osbuilder.foundation.fsutil import check_output_path

        check_output_path(options.runtime_config_fragment, "--runtime-config-fragment")
    with tempfile.TemporaryDirectory(prefix="osbuilder-inspect-") as work:
        reports = inspect_many(options.artifact, Path(work), runner)
        add_updates(reports, options, Path(work), runner)
        if options.runtime_config_fragment is not None:  # a release's root_hash_<label>.txt lives in `work`
            text = fragment_for_report(reports, build_options(FragmentOptions, values), Templates())
            with StagedFile(options.runtime_config_fragment) as staged:
                staged.write_text(text)
    emit(args, as_json(reports), "\n\n".join(describe(report) for report in reports))
    return EXIT_BUILD_FAILED if any(has_errors(r.findings) for r in reports) else EXIT_OK


def cmd_check(args: argparse.Namespace, runner: Runner) -> int:
    from osbuilder.inspect_cli import CheckOptions
    import tempfile

    from osbuilder.check import check
    from osbuilder.host.hostconfig import host_cgroup_drivers, runtime_sections
    from osbuilder.inspect_cli import findings_lines

    options = build_options(CheckOptions, settings_values(args))
    sections = runtime_sections(options.runtime_config) if options.runtime_config else []
    drivers = host_cgroup_drivers(options.host_cgroup_driver, options.containerd_config, options.crio_config,
                                  options.kubelet_config)
    with tempfile.TemporaryDirectory(prefix="osbuilder-check-") as work:
        result = check(options.artifact, sections, drivers, options.kernel_config, Path(work), runner,
                       options.fail_on, updates=options)
    host = drivers.decided
    lines = [f"host cgroup driver: {host.value} (from {host.source})" if host else
             "host cgroup driver: unknown (pass --host-cgroup-driver or a containerd, CRI-O or kubelet config)"]
    lines += [f"  also: {d.value} (from {d.source})" for d in drivers.found[1:]]
    lines += [f"checked: {s['artifact']} ({s['kind']}, init mode {s['init_mode']}, {s['arch']})"
              + (f" as hypervisor.{s['section']}" if s["section"] else "") for s in result.subjects]
    lines += findings_lines(result.findings)
    failing = len(result.failing)
    lines.append(f"check: {'FAILED' if failing else 'OK'} ({result.errors} error(s), "
                 f"{len(result.findings) - result.errors} other finding(s); failing on {options.fail_on}"
                 f"{' and worse' if options.fail_on != 'error' else ''}: {failing})")
    emit(args, result.as_json(), "\n".join(lines))
    return EXIT_BUILD_FAILED if failing else EXIT_OK


def cmd_cache(args: argparse.Namespace, runner: Runner) -> int:
    from osbuilder.foundation.cache import CacheOptions
    from osbuilder.foundation.cache import CACHE_ACTIONS, BuildCache, default_cache_dir

    options = build_options(CacheOptions, settings_values(args))
    if options.action not in CACHE_ACTIONS:
        raise UserError(f"unknown cache action '{options.action}'", f"use {' or '.join(CACHE_ACTIONS)}")
    if options.older_than is not None and options.action != "clean":
        raise UserError("--older-than applies to clean", "drop --older-than, or use 'osbuilder cache clean'")
    if options.all and options.action != "clean":
        raise UserError("--all applies to clean", "drop --all, or use 'osbuilder cache clean --all'")
    if options.action == "clean" and options.all == (options.older_than is not None):
        # One cache serves every job of a user: emptying it is asked for, not a default.
        raise UserError("cache clean needs --all (every entry, other jobs' too) or --older-than DAYS",
                        "pass one of them")
    cache = BuildCache(options.cache_dir or default_cache_dir())
    if options.action == "list":
        entries = cache.entries()
        lines = [f"{e.kind:<10} {e.size / 2**20:>9.1f} MiB  {time.strftime('%Y-%m-%d', time.gmtime(e.last_used))}  "
                 f"{e.name}" for e in entries]
        total = sum(e.size for e in entries)
        lines.append(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {total / 2**20:.1f} MiB in {cache.root}")
        emit(args, {"cache_dir": str(cache.root), "entries": [e.as_json() for e in entries], "bytes": total},
             "\n".join(lines))
        return EXIT_OK
    removed = cache.clean(options.older_than)
    freed = sum(e.size for e in removed)
    emit(args, {"cache_dir": str(cache.root), "removed": [e.as_json() for e in removed], "bytes": freed},
         f"removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} ({freed / 2**20:.1f} MiB) from "
         f"{cache.root}")
    return EXIT_OK


HANDLERS: dict[str, Callable[[argparse.Namespace, Runner], int]] = {
    "build": cmd_build,
    "rootfs": cmd_rootfs,
    "distros": cmd_distros,
    "boot": cmd_boot,
    "inspect": cmd_inspect,
    "check": cmd_check,
    "cache": cmd_cache,
    "matrix": cmd_matrix,
}


def handler(command: str) -> Callable[[argparse.Namespace, Runner], int]:
    return cmd_pack if command in PACKER_CATALOG else HANDLERS[command]


def _raise_terminated(signum: int, frame: Any) -> NoReturn:
    raise Terminated


# What an interrupted command says it left: the writers clean their staging up; boot stops
# its guest; the others only read.
WRITING_COMMANDS = ("build", "rootfs", *PACKER_CATALOG, "cache")
INTERRUPTED_BOOT = "the guest was stopped and its scratch files removed"
INTERRUPTED_READER = "nothing was written"


def interrupted(command: str | None, signum: int) -> Interrupted:
    if command in WRITING_COMMANDS:
        return Interrupted(signum)
    return Interrupted(signum, INTERRUPTED_BOOT if command == "boot" else INTERRUPTED_READER)


def _quiet_broken_pipe() -> int:
    """stdout's reader went away (`osbuilder distros | head -1`): stop quietly, as a Unix tool
    that SIGPIPE stops does, its status 128 + SIGPIPE, with nothing more written to the pipe."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 128 + signal.SIGPIPE


def as_user_facing(exc: BaseException) -> OsbuilderError:
    """Errors that are not osbuilder's own, as one line that names the problem and the fix."""
    if isinstance(exc, OsbuilderError):
        if isinstance(exc, CommandError) and exc.out_of_space:
            return BuildError(f"no space left on device while '{exc.argv[0]}' was writing",
                              "free some space, or write the output to another filesystem")
        return exc
    if isinstance(exc, OSError):
        where = f" '{exc.filename}'" if exc.filename else ""
        if exc.errno == errno.ENOSPC:
            return BuildError(f"no space left on device{' writing' + where if where else ''}",
                              "free some space, or write the output to another filesystem")
        if exc.errno in (errno.EACCES, errno.EPERM):
            return UserError(f"permission denied{':' + where if where else ''}",
                             "run as a user who can read the input and write the output")
        return BuildError(f"{exc.strerror or exc}{':' + where if where else ''}", "check the path and the disk")
    return InternalError(f"{type(exc).__name__}: {exc}")


def timeout_scale() -> float:
    """OSBUILDER_TIMEOUT_SCALE: every command's limit times this (runner.py)."""
    text = os.environ.get("OSBUILDER_TIMEOUT_SCALE", "1")
    try:
        scale = float(text)
    except ValueError:
        scale = 0.0
    if not scale > 0:
        raise UserError(f"OSBUILDER_TIMEOUT_SCALE={text} is not a positive number", "set it to e.g. 2, or unset it")
    return scale


def needs_fakeroot(args: argparse.Namespace, privilege: Privilege) -> bool:
    """An ordinary user's build runs under fakeroot (foundation/privilege.py); a matrix's
    parent does not: each target's build re-executes itself."""
    if args.command != "build" or privilege.sets_owners:
        return False
    from osbuilder.matrix import is_matrix_file

    return not (args.config is not None and args.config.is_file() and is_matrix_file(args.config)
                and args.target is None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = make_parser(chosen_command(argv)).parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="osbuilder: %(message)s", stream=sys.stderr)
    if not args.verbose:
        logging.getLogger("osbuilder.run").setLevel(max(level, logging.WARNING))
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    events = sink_from_environment(os.environ)  # a matrix build's parent listening (events.py)
    if events is not None:
        logging.getLogger("osbuilder").addHandler(EventLogHandler(events))
    try:
        privilege = Privilege.detect()
        if needs_fakeroot(args, privilege):
            privilege.reexec_under_fakeroot(argv)
        if args.command == "rootfs" and not privilege.root:
            raise UserError("osbuilder rootfs needs root: a tree written by an ordinary user cannot keep the guest's "
                            "owners and device nodes", "use osbuilder build, which packs in the same run and works "
                            "unprivileged, or run as root")
        with progress_for(sys.stderr, enabled=not args.quiet and not args.verbose) as progress:
            code = handler(args.command)(args, Runner(progress=progress, timeout_scale=timeout_scale(),
                                                 privilege=privilege))
        sys.stdout.flush()  # here, where a reader that went away is handled, not at exit
        return code
    except KeyboardInterrupt as stop:
        error: OsbuilderError = interrupted(args.command, signal.SIGTERM if isinstance(stop, Terminated) else
                                            signal.SIGINT)
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except Exception as exc:  # noqa: BLE001 - every failure reaches the user as one line, never a traceback
        log.debug("failure", exc_info=True)
        error = as_user_facing(exc)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"osbuilder: error: {error}", file=sys.stderr)
    if error.details():
        print(error.details(), file=sys.stderr)
    if events is not None:
        events.emit("error", message=error.message, hint=error.hint, exit_code=error.exit_code)
    return error.exit_code
