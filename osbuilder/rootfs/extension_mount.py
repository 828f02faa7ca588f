"""Kata's extension-mount contract (docs/kata-contract.md, composable guests), in one place: the names a systemd
base needs to mount extension images, osbuilder's own implementation of it (rendered from
templates/, installed when the agent tarball brought none), and the checks that a base holds
what it needs, on a tree being built (GuestRoot) and on a packed artifact (GuestView)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from osbuilder.foundation.errors import BuildError, UserError
from osbuilder.foundation.fsutil import GuestRoot
from osbuilder.foundation.guest_layout import GENERATOR_DIR, UNIT_DIR
from osbuilder.read.view import GuestView

if TYPE_CHECKING:  # jinja2 is imported by what renders, not by what checks
    from osbuilder.foundation.templates import Templates

# Kata's names, exact: the agent tarball ships these four files.
UNIT_PREFIX = "kata-extension-mount@"
UNIT_TEMPLATE = f"{UNIT_PREFIX}.service"
MOUNT_SCRIPT = "/usr/libexec/kata-extension-mount.sh"
UMOUNT_SCRIPT = "/usr/libexec/kata-extension-umount.sh"
GENERATOR = f"{GENERATOR_DIR}/kata-extension-mount-generator"
MOUNT_UNIT = f"{UNIT_DIR}/{UNIT_TEMPLATE}"
WANTED_BY = "kata-containers.target"
PARAM_PREFIX = "kata.extension."
SERIAL_PREFIX = "extension-"
MOUNT_ROOT = "/run/kata-extensions"
VERITYSETUP = "veritysetup"
# What osbuilder's mount script prints to the console before it fails (boot watches for it).
EXTENSION_ERROR_MARKER = "OSBUILDER-EXTENSION-ERROR"
# The generator accepts these names; the serial must also fit virtio-blk's 20-byte id.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
VIRTIO_SERIAL_BYTES = 20
MAX_NAME_LENGTH = VIRTIO_SERIAL_BYTES - len(SERIAL_PREFIX)
# Kernel support the mount needs, as module names (a guest's /lib/modules, when it has one).
KERNEL_MODULES = ("erofs", "dm_verity", "dm_mod")
COMMAND_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")

# (guest path, template, mode) of osbuilder's own implementation.
FILES = ((MOUNT_UNIT, "kata-extension-mount@.service.j2", 0o644),
         (MOUNT_SCRIPT, "kata-extension-mount.sh.j2", 0o755),
         (UMOUNT_SCRIPT, "kata-extension-umount.sh.j2", 0o755),
         (GENERATOR, "kata-extension-mount-generator.j2", 0o755))


def name_problem(name: str) -> str | None:
    """Why `name` cannot name an extension (the generator skips it, or its serial does not
    fit), or None."""
    if not NAME_PATTERN.fullmatch(name):
        return f"'{name}' has characters other than letters, digits, '_' and '-', which Kata's generator skips"
    if len(name) > MAX_NAME_LENGTH:
        return (f"'{name}' is longer than {MAX_NAME_LENGTH} characters: its disk serial {SERIAL_PREFIX}{name} "
                f"would not fit virtio-blk's {VIRTIO_SERIAL_BYTES} bytes")
    return None


def check_name(name: str, flag: str) -> str:
    problem = name_problem(name)
    if problem is not None:
        raise UserError(f"{flag} {problem}", f"use at most {MAX_NAME_LENGTH} letters, digits, '_' or '-'")
    return name


def parse_extension_images(values: tuple[str, ...], flag: str, require_files: bool = True) -> list[tuple[str, Path]]:
    """NAME=IMAGE pairs: valid, distinct names of images that exist (or, without
    `require_files`, that a build reads when it starts: a matrix target's image is built first)."""
    pairs: list[tuple[str, Path]] = []
    for value in values:
        name, sep, image = value.partition("=")
        if not sep or not image:
            raise UserError(f"{flag} '{value}' is not NAME=IMAGE", f"pass e.g. {flag} coco=kata-containers-coco-"
                            "extension.img")
        check_name(name, flag)
        if name in (n for n, _ in pairs):
            raise UserError(f"{flag} names the extension '{name}' twice", "give each extension once")
        if require_files and not Path(image).is_file():
            raise UserError(f"{flag} {name}: '{image}' does not exist", "pass the extension image osbuilder built")
        pairs.append((name, Path(image)))
    return pairs


def kernel_param(name: str, verity_params: str | None) -> str:
    """The parameter the runtime adds: with the root-hash line, or bare when unmeasured."""
    key = f"{PARAM_PREFIX}{name}.verity_params"
    return f"{key}={verity_params}" if verity_params else key


def serial(name: str) -> str:
    return f"{SERIAL_PREFIX}{name}"


def install_extension_mount(guest: GuestRoot, templates: Templates) -> tuple[str, ...]:
    """osbuilder's implementation of the contract, for each of its files the tree (the agent
    tarball) does not already hold: Kata's own files win. Returns what was written."""
    values = {"param_prefix": PARAM_PREFIX, "serial_prefix": SERIAL_PREFIX, "mount_root": MOUNT_ROOT,
              "mount_script": MOUNT_SCRIPT, "umount_script": UMOUNT_SCRIPT, "unit_dir": UNIT_DIR,
              "unit_template": UNIT_TEMPLATE, "unit_prefix": UNIT_PREFIX, "target": WANTED_BY,
              "generator": GENERATOR, "error_marker": EXTENSION_ERROR_MARKER}
    written = []
    for path, template, mode in FILES:
        if not guest.lexists(path):
            guest.write_text(path, templates.render(template, **values), mode)
            written.append(path)
    return tuple(written)


@dataclass(frozen=True)
class MountSupport:
    """What a base lacks to mount extensions (empty: it can)."""

    missing: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.missing

    def reason(self) -> str:
        return "it lacks " + ", ".join(self.missing)


def _module_present(names: list[str], builtin: str, module: str) -> bool:
    variants = {module, module.replace("_", "-")}
    return any(name.split(".ko")[0] in variants for name in names) or \
        any(f"/{v}.ko" in builtin for v in variants)


def mount_support(view: GuestView) -> MountSupport:
    """Whether a base's tree holds the unit, scripts, generator and veritysetup, and (when it
    carries kernel modules) the erofs and dm-verity support, by reading it."""
    missing = []
    for path, _, mode in FILES:
        node = view.stat(path)
        if node is None or node.kind != "file":
            missing.append(path)
        elif mode & 0o111 and not node.mode & 0o111:
            missing.append(f"{path} (not executable)")
    if not any((node := view.stat(f"{d}/{VERITYSETUP}")) is not None and node.kind == "file" for d in COMMAND_DIRS):
        missing.append(f"{VERITYSETUP} (cryptsetup)")
    for version in view.listdir("/lib/modules"):
        modules: list[str] = []
        for directory, _ in _walk(view, f"/lib/modules/{version}"):
            modules += view.listdir(directory)
        builtin = (view.read_file(f"/lib/modules/{version}/modules.builtin") or b"").decode(errors="replace")
        missing += [f"the {module} kernel module ({version})" for module in KERNEL_MODULES
                    if not _module_present(modules, builtin, module)]
    return MountSupport(tuple(missing))


def _walk(view: GuestView, top: str, depth: int = 8) -> list[tuple[str, int]]:
    found = [(top, depth)]
    if depth:
        for name in view.listdir(top):
            node = view.lstat(f"{top}/{name}")
            if node is not None and node.kind == "dir":
                found += _walk(view, f"{top}/{name}", depth - 1)
    return found


def check_extension_mount(guest: GuestRoot) -> None:
    """Refuse a systemd base that could not mount extensions."""
    from osbuilder.read.view import DirView

    support = mount_support(DirView(guest.root))
    if not support.ok:
        raise BuildError(f"a systemd base must be able to mount extension images, but {support.reason()}",
                         "keep the agent tarball's extension-mount files (or let osbuilder install its own) and "
                         "the cryptsetup package (veritysetup)")
