"""Command-line front end: parse, build a config, call one function, map errors to exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

from osbuilder import __version__
from osbuilder.config import BuildConfig, make_config
from osbuilder.errors import EXIT_BAD_INPUT, EXIT_BUILD_FAILED, EXIT_OK, Interrupted, OsbuilderError, UserError
from osbuilder.recipes import INIT_MODES, load_all
from osbuilder.runner import Runner
from osbuilder.settings import add_arguments, values_from_args
from osbuilder.tools import HostTools

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
NOT_BUILT_YET = ("inspect", "check")
# Commands whose arguments are declared here rather than by BuildConfig's settings.
OWN_ARGUMENTS = NOT_BUILT_YET + ("boot",)


def make_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="osbuilder", description="Build guest operating systems for VM sandboxes.")
    parser.add_argument("--version", action="version", version=f"osbuilder {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every command and its output")
    parser.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for name, help_text in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name in ("initrd", "image", "iso"):
            _add_packer_arguments(command)
        if name == "boot":
            _add_boot_arguments(command)
        if name not in OWN_ARGUMENTS:
            add_arguments(command, BuildConfig, name)
        if name == "distros":
            command.add_argument("--json", action="store_true", help="print JSON instead of a table")
            command.add_argument("--recipes-dir", metavar="DIR", help="read recipes from this directory")
    return parser


def _add_packer_arguments(command: argparse.ArgumentParser) -> None:
    """Arguments every packer of an existing tree takes (initrd, image, iso)."""
    command.add_argument("rootfs", metavar="ROOTFS", type=Path, help="guest tree written by osbuilder rootfs")
    command.add_argument("-o", "--output", metavar="FILE", type=Path, required=True, help="artifact to write")
    command.add_argument("--init", choices=INIT_MODES, default=None,
                         help="init mode to pack for (default: the one the tree's osbuilder.yaml records)")
    command.add_argument("--force", action="store_true", help="replace an existing output")


def _add_boot_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("artifact", metavar="ARTIFACT", type=Path, help="initrd, disk image or ISO to boot")
    command.add_argument("--kernel", metavar="VMLINUZ|DEB|debian", type=Path, required=True,
                         help="kernel file, a linux-image-*.deb (its kernel and modules), or 'debian': Debian's "
                              "current kernel package for the guest's arch, downloaded once into the cache")
    command.add_argument("--modules", metavar="DIR|DEB", type=Path,
                         help="the kernel's lib/modules/<version> directory or linux-image-*.deb, "
                              "for the boot shim that disk images need on stock kernels")
    command.add_argument("--arch", metavar="ARCH", help="guest architecture (default: the artifact's or the kernel's)")
    command.add_argument("--device", choices=("virtio-blk", "nvdimm"),
                         help="how a disk image is attached (default: nvdimm with the DAX header, where the "
                              "machine has NVDIMMs)")
    command.add_argument("--append", metavar="ARGS", default="", help="more kernel parameters")
    command.add_argument("--host-cgroup-driver", choices=("systemd", "cgroupfs"),
                         help="the host's cgroup driver to pretend (kernel parameter osbuilder.host_cgroup_driver)")
    command.add_argument("--expect", metavar="REGEX",
                         help="console text that means success (default: the probe's line, or the real "
                              "agent's start-up line)")
    command.add_argument("--timeout", metavar="S", type=float, default=120.0, help="give up after S seconds (default 120)")
    command.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                         help="auto: KVM when a short probe shows it booting the kernel, else TCG")
    command.add_argument("--memory", metavar="MiB", type=int, default=1024, help="guest RAM (default 1024)")
    command.add_argument("--no-pvh", dest="pvh", action="store_false",
                         help="boot an x86_64 bzImage as is, not its vmlinux through PVH")
    command.add_argument("--cache-dir", metavar="DIR", type=Path,
                         help="keep downloaded and unpacked kernels and extracted vmlinux files here "
                              "(default with --kernel debian: ~/.cache/osbuilder)")
    command.add_argument("--console-log", metavar="FILE", type=Path, help="write everything the console printed here")
    command.add_argument("--json", action="store_true", help="print the result as JSON")


def cmd_boot(args: argparse.Namespace, runner: Runner) -> int:
    from osbuilder.boot.session import BootRequest, boot_artifact
    from osbuilder.templates import Templates

    if args.memory < 128:
        raise UserError(f"--memory {args.memory} MiB is too little to boot", "pass at least 128")
    request = BootRequest(artifact=args.artifact, kernel=args.kernel, modules=args.modules, arch=args.arch,
                          device=args.device, append=args.append, expect=args.expect, timeout=args.timeout,
                          accel=args.accel, memory_mib=args.memory, pvh=args.pvh,
                          host_cgroup_driver=args.host_cgroup_driver, cache_dir=args.cache_dir)
    if args.console_log is not None:
        from osbuilder.fsutil import check_output_path

        check_output_path(args.console_log, "--console-log")
    result = boot_artifact(request, runner, Templates())
    if args.console_log is not None:
        from osbuilder.staging import StagedFile

        with StagedFile(args.console_log) as staged:
            staged.write_text(result.console)
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
    elif result.ok:
        how = f"{result.accel}, {'PVH vmlinux' if result.pvh else 'kernel as given'}"
        print(f"boot: OK in {result.seconds:.1f} s ({how}{', ' + result.device if result.device else ''})")
        if result.probe:
            print("probe: " + " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                                       for k, v in result.probe.items()))
    if not result.ok:
        print(f"osbuilder: boot failed ({result.outcome}): {result.reason}", file=sys.stderr)
        print("--- console tail ---\n" + result.console_tail, file=sys.stderr)
        return EXIT_BUILD_FAILED
    return EXIT_OK


def cmd_initrd(args: argparse.Namespace, runner: Runner) -> int:
    from osbuilder.guest_tree import open_guest_tree
    from osbuilder.initrd import pack_initrd
    from osbuilder.pack.compress import get_codec
    from osbuilder.staging import StagedFile, check_output_file

    codec = get_codec(args.compression or "gzip")
    level = codec.check_level(args.level)
    output = check_output_file(args.output, args.force)
    tree = open_guest_tree(args.rootfs, args.init)
    with StagedFile(output) as staged:
        artifact = pack_initrd(tree, staged, codec.name, level, HostTools.probe(), runner)
    print(f"initrd: {output} ({artifact.size} bytes, {codec.name}, init mode {tree.init_mode}, "
          f"cgroup driver {tree.cgroup_driver})")
    return EXIT_OK


def cmd_image(args: argparse.Namespace, runner: Runner) -> int:
    from osbuilder.guest_tree import open_guest_tree
    from osbuilder.image import pack_image
    from osbuilder.staging import StagedFile, check_output_file, work_directory

    values = values_from_args(args, BuildConfig, "image")
    options = BuildConfig.image_options_from(values)
    options.validate()
    output = check_output_file(args.output, args.force)
    tree = open_guest_tree(args.rootfs, args.init)
    with work_directory(output) as work, StagedFile(output) as staged:
        artifact = pack_image(tree, staged, options, work, runner)
        verity = artifact.details.get("verity")
        if verity:
            # The kernel parameters go beside the image, named after it.
            params = output.with_name(output.name + ".root_hash.txt")
            with StagedFile(params) as staged_params:
                staged_params.write_text(verity["kernel_params"] + "\n")
    print(f"image: {output} ({artifact.size} bytes, {options.fs}, {'DAX' if options.dax else 'no DAX'}, "
          f"init mode {tree.init_mode}, cgroup driver {tree.cgroup_driver})")
    return EXIT_OK


def cmd_iso(args: argparse.Namespace, runner: Runner) -> int:
    from osbuilder.guest_tree import open_guest_tree
    from osbuilder.image import pack_iso
    from osbuilder.staging import StagedFile, check_output_file

    output = check_output_file(args.output, args.force)
    tree = open_guest_tree(args.rootfs, args.init)
    with StagedFile(output) as staged:
        artifact = pack_iso(tree, staged)
    print(f"iso: {output} ({artifact.size} bytes, init mode {tree.init_mode}, "
          f"cgroup driver {tree.cgroup_driver})")
    return EXIT_OK


def cmd_build(args: argparse.Namespace, runner: Runner) -> int:
    from osbuilder.build import run_build

    config, recipe = make_config(values_from_args(args, BuildConfig, "build"))
    result = run_build(config, recipe, HostTools.probe(), runner)
    for artifact in result.artifacts:
        print(f"{artifact.format}: {artifact.path} ({artifact.size} bytes, sha256 {artifact.sha256})")
    print(f"manifest: {result.output / 'manifest.json'} (init mode {result.summary.init_mode}, "
          f"cgroup driver {result.summary.cgroup_driver})")
    return EXIT_OK


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
        for r in load_all(Path(args.recipes_dir) if args.recipes_dir else None)
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
    "build": cmd_build,
    "rootfs": cmd_rootfs,
    "initrd": cmd_initrd,
    "image": cmd_image,
    "iso": cmd_iso,
    "distros": cmd_distros,
    "boot": cmd_boot,
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
