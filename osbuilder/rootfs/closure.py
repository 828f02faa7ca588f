"""The closure check: everything in a guest that can run finds what it needs inside the guest.

Every ELF executable or shared object must find its dynamic linker and each DT_NEEDED library
(along its own RUNPATH/RPATH with $ORIGIN, then the guest's library path), and every
executable script its `#!` interpreter (and, through /usr/bin/env, the command). It runs on
every tree osbuilder builds or packs, so removing files (--slim, an overlay, a user's own
tree) can never leave a guest that fails at run time. Nothing is executed; files are read.
"""

from __future__ import annotations

import mmap
import os
import posixpath
import stat
from dataclasses import dataclass
from struct import error as struct_error

from osbuilder.foundation.elf import parse_elf_header, read_dynamic
from osbuilder.foundation.errors import BuildError, UserError
from osbuilder.foundation.fsutil import GuestRoot
from osbuilder.read.view import GuestView
from osbuilder.rootfs.libraries import library_dirs, search_path, view_library_dirs

# Not part of what runs: kernel modules are relocatable objects loaded by the kernel, and the
# API file systems are mounted over at boot.
SKIPPED_DIRS = ("/lib/modules", "/usr/lib/modules", "/proc", "/sys", "/dev")
GUEST_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
ENV = "env"
MAX_REPORTED = 3


# What a file that cannot run lacks (Missing.kind).
UNREADABLE_ELF, LINKER, LIBRARY, NO_INTERPRETER, INTERPRETER, COMMAND = (
    "unreadable-elf", "linker", "library", "no-interpreter", "interpreter", "command")
# A script whose interpreter or #!/usr/bin/env command is gone.
SCRIPT_LACKS = (INTERPRETER, COMMAND)


@dataclass(frozen=True)
class Missing:
    path: str  # the guest file that cannot run
    kind: str  # what sort of thing it lacks (one of the names above)
    needs: str  # what it lacks, in words, for the error message


class ClosureScan:
    """`base`: the tree an extension image is mounted into; what the extension's files need
    may be found there as well."""

    def __init__(self, guest: GuestRoot, base: GuestView | None = None) -> None:
        self.guest = guest
        self.base = base
        self.dirs = list(dict.fromkeys(library_dirs(guest) + (view_library_dirs(base) if base else [])))
        self._exists: dict[str, bool] = {}

    def exists(self, guest_path: str) -> bool:
        known = self._exists.get(guest_path)
        if known is None:
            try:
                known = self.guest.resolve(guest_path).is_file()
            except BuildError:  # a link loop inside the guest: nothing is there
                known = False
            if not known and self.base is not None:
                try:
                    node = self.base.stat(guest_path)
                except (BuildError, UserError):  # a link loop in the base
                    node = None
                known = node is not None and node.kind == "file"
            self._exists[guest_path] = known
        return known

    def command(self, name: str) -> bool:
        return any(self.exists(posixpath.join(d, name)) for d in GUEST_PATH)

    def scan(self) -> list[Missing]:
        missing: list[Missing] = []
        root = self.guest.root
        for directory, subdirs, files in os.walk(root):
            guest_dir = "/" + os.path.relpath(directory, root) if directory != str(root) else "/"
            guest_dir = posixpath.normpath(guest_dir)
            subdirs[:] = sorted(d for d in subdirs if posixpath.join(guest_dir, d) not in SKIPPED_DIRS)
            for name in sorted(files):
                missing += self.check_file(os.path.join(directory, name), posixpath.join(guest_dir, name))
        return missing

    def check_file(self, path: str, guest_path: str) -> list[Missing]:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size < 4:
            return []
        with open(path, "rb") as f:
            head = f.read(256)
            if head.startswith(b"\x7fELF"):
                header = parse_elf_header(head[:20])
                if header is None or not header.executable:
                    return []
                # Mapped, not read: only the headers and the dynamic section are touched.
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                    return self.check_elf(data, guest_path)
        if head.startswith(b"#!") and info.st_mode & 0o111:
            return self.check_script(head, guest_path)
        return []

    def check_elf(self, data: bytes | mmap.mmap, guest_path: str) -> list[Missing]:
        try:
            dynamic = read_dynamic(data)
        except (ValueError, IndexError, struct_error):
            return [Missing(guest_path, UNREADABLE_ELF, "a readable ELF dynamic section")]
        if dynamic is None:
            return []
        found: list[Missing] = []
        if dynamic.interpreter and not self.exists(dynamic.interpreter):
            found.append(Missing(guest_path, LINKER, f"its dynamic linker {dynamic.interpreter}"))
        origin = posixpath.dirname(guest_path)
        search = search_path(dynamic.search, origin, self.dirs)
        if dynamic.interpreter is None:
            # A library's own directory: private libraries (systemd's) are found there through
            # the executable's RUNPATH, and glibc reuses an object already loaded by soname.
            search.append(origin)
        for library in dynamic.needed:
            if "/" in library:
                ok = self.exists(library if library.startswith("/") else posixpath.join(origin, library))
            else:
                ok = any(self.exists(posixpath.join(d, library)) for d in search)
            if not ok:
                found.append(Missing(guest_path, LIBRARY, f"the library {library}"))
        return found

    def check_script(self, head: bytes, guest_path: str) -> list[Missing]:
        words = head[2:].split(b"\n")[0].decode(errors="replace").split()
        if not words:
            return [Missing(guest_path, NO_INTERPRETER, "an interpreter after #!")]
        interpreter = words[0]
        if not self.exists(interpreter):
            return [Missing(guest_path, INTERPRETER, f"its interpreter {interpreter}")]
        if posixpath.basename(interpreter) == ENV:
            command = next((w for w in words[1:] if not w.startswith("-") and "=" not in w), None)
            if command is not None and not (self.exists(command) if "/" in command else self.command(command)):
                return [Missing(guest_path, COMMAND, f"the command {command} (#!{' '.join(words)})")]
        return []


def check_closure(guest: GuestRoot, tools: tuple[str, ...] = (), base: GuestView | None = None) -> None:
    """Refuse a tree in which something cannot run, or that lacks a tool it must have."""
    scan = ClosureScan(guest, base)
    absent = [tool for tool in tools if not (scan.exists(tool) if "/" in tool else scan.command(tool))]
    if absent:
        raise UserError(f"the guest lacks {', '.join(absent)}, which the recipe says it needs",
                        "keep the packages that ship them (check the recipe's removals and package lists)")
    missing = scan.scan()
    if missing:
        shown = "; ".join(f"{m.path} needs {m.needs}" for m in missing[:MAX_REPORTED])
        more = f" (and {len(missing) - MAX_REPORTED} more)" if len(missing) > MAX_REPORTED else ""
        where = f" (looked up in the extension and its base, {base.where})" if base is not None else ""
        raise UserError(f"the guest would fail at run time: {shown}{more}{where}",
                        "keep or add what they need (check the recipe's removals, --overlay and the tree), "
                        "or remove them")
