"""Command-line front end: parse, build a config, call one function, map errors to exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from typing import Any, Callable, NoReturn, Sequence

from osbuilder import __version__
from osbuilder.config import BuildConfig, make_config
from osbuilder.errors import EXIT_BAD_INPUT, EXIT_OK, Interrupted, OsbuilderError, UserError
from osbuilder.recipes import load_all
from osbuilder.runner import Runner
from osbuilder.settings import add_arguments, values_from_args

log = logging.getLogger("osbuilder")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that says where to look."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


COMMANDS: dict[str, str] = {
    "build": "run the whole pipeline: rootfs, then initrd/image/iso",
    "rootfs": "bootstrap and provision a guest root filesystem directory",
    "initrd": "pack a rootfs into an initrd (cpio newc, compressed)",
    "image": "pack a rootfs into a disk image (ext4, xfs or erofs, with the NVDIMM/DAX header)",
    "iso": "pack a rootfs into an ISO 9660 image",
    "boot": "boot an artifact under qemu and check the guest's report",
    "inspect": "print how an artifact was built (init mode, cgroup driver, ...)",
    "check": "check an artifact against a host's runtime settings",
    "distros": "list the supported distribution x arch x init-mode combinations",
}
NOT_BUILT_YET = ("build", "initrd", "image", "iso", "boot", "inspect", "check")


def make_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="osbuilder", description="Build guest operating systems for VM sandboxes.")
    parser.add_argument("--version", action="version", version=f"osbuilder {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every command and its output")
    parser.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for name, help_text in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name not in NOT_BUILT_YET:
            add_arguments(command, BuildConfig, name)
        if name == "distros":
            command.add_argument("--json", action="store_true", help="print JSON instead of a table")
            command.add_argument("--recipes-dir", metavar="DIR", help="read recipes from this directory")
    return parser


def cmd_rootfs(args: argparse.Namespace, runner: Runner) -> int:
    from osbuilder.rootfs import build_rootfs

    config, recipe = make_config(values_from_args(args, BuildConfig, "rootfs"))
    result = build_rootfs(config, recipe, runner)
    print(f"rootfs: {result.path} (init mode {result.summary.init_mode}, "
          f"cgroup driver {result.summary.cgroup_driver})")
    return EXIT_OK


def cmd_distros(args: argparse.Namespace, runner: Runner) -> int:
    rows = [
        {"distro": r.name, "release": r.default_release, "releases": list(r.releases),
         "arch": arch, "init_modes": list(r.init_modes), "backend": r.backend}
        for r in load_all(args.recipes_dir and __import__("pathlib").Path(args.recipes_dir))
        for arch in r.arches
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    print(f"{'DISTRO':<14}{'ARCH':<10}{'INIT MODES':<16}{'RELEASES'}")
    for row in rows:
        print(f"{row['distro']:<14}{row['arch']:<10}{','.join(row['init_modes']):<16}{','.join(row['releases'])}")
    return EXIT_OK


def cmd_not_built(args: argparse.Namespace, runner: Runner) -> int:
    raise UserError(f"'osbuilder {args.command}' is not built yet", "it arrives in a later release; see the README")


HANDLERS: dict[str, Callable[[argparse.Namespace, Runner], int]] = {
    "rootfs": cmd_rootfs,
    "distros": cmd_distros,
    **{name: cmd_not_built for name in NOT_BUILT_YET},
}


def _raise_interrupted(signum: int, frame: Any) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="osbuilder: %(message)s", stream=sys.stderr)
    if not args.verbose:
        logging.getLogger("osbuilder.run").setLevel(max(level, logging.WARNING))
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        return HANDLERS[args.command](args, Runner())
    except KeyboardInterrupt:
        error: OsbuilderError = Interrupted()
    except OsbuilderError as exc:
        error = exc
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"osbuilder: error: {error}", file=sys.stderr)
    if error.details():
        print(error.details(), file=sys.stderr)
    return error.exit_code
