"""Whether a dynamically linked agent will load in its guest: its interpreter and every
DT_NEEDED library (and theirs) found inside the rootfs along the guest's own library path,
the way the guest's dynamic linker looks, without running anything."""

from __future__ import annotations

import fnmatch
import glob
import posixpath
from typing import TYPE_CHECKING

from osbuilder.foundation.elf import read_dynamic
from osbuilder.foundation.errors import UserError
from osbuilder.foundation.fsutil import GuestRoot

if TYPE_CHECKING:
    from osbuilder.read.view import GuestView

# The dynamic linker's defaults, and the multiarch directories Debian-family guests use.
DEFAULT_DIRS = ("/lib", "/usr/lib", "/lib64", "/usr/lib64")
LD_SO_CONF = "/etc/ld.so.conf"
MAX_INCLUDE_DEPTH = 4


def _ld_so_conf(guest: GuestRoot, conf: str, depth: int = 0) -> list[str]:
    path = guest.resolve(conf)
    if depth > MAX_INCLUDE_DEPTH or not path.is_file():
        return []
    dirs: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("include "):
            pattern = line.split(None, 1)[1]
            if not pattern.startswith("/"):
                pattern = posixpath.join(posixpath.dirname(conf), pattern)
            # The pattern is matched inside the tree, never on the host.
            for match in sorted(glob.glob(str(guest.resolve(posixpath.dirname(pattern)))
                                          + "/" + posixpath.basename(pattern))):
                dirs += _ld_so_conf(guest, guest.guest_path_of(match), depth + 1)
        else:
            dirs.append(line)
    return dirs


def library_dirs(guest: GuestRoot) -> list[str]:
    return list(dict.fromkeys(_ld_so_conf(guest, LD_SO_CONF) + list(DEFAULT_DIRS)))


def view_library_dirs(view: "GuestView", conf: str = LD_SO_CONF, depth: int = 0) -> list[str]:
    """library_dirs for a tree read through a GuestView (a packed base image)."""
    data = view.read_file(conf) if depth <= MAX_INCLUDE_DEPTH else None
    dirs: list[str] = []
    for line in (data or b"").decode(errors="replace").splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("include "):
            pattern = line.split(None, 1)[1]
            if not pattern.startswith("/"):
                pattern = posixpath.join(posixpath.dirname(conf), pattern)
            directory = posixpath.dirname(pattern)
            for name in sorted(fnmatch.filter(view.listdir(directory), posixpath.basename(pattern))):
                dirs += view_library_dirs(view, posixpath.join(directory, name), depth + 1)
        elif line:
            dirs.append(line)
    return list(dict.fromkeys(dirs + (list(DEFAULT_DIRS) if depth == 0 else [])))


def search_path(search: tuple[str, ...], origin: str, dirs: list[str]) -> list[str]:
    """Where the dynamic linker looks for an object's DT_NEEDED: its RUNPATH/RPATH with
    $ORIGIN expanded to the object's directory (`origin`), then the guest's library path."""
    return [d.replace("${ORIGIN}", origin).replace("$ORIGIN", origin) for d in search] + dirs


def check_libraries(guest: GuestRoot, binary: str, what: str) -> None:
    """Raise a UserError naming the first interpreter or library `binary` (a guest path) needs
    that the guest does not have."""
    dirs = library_dirs(guest)
    seen: set[str] = set()
    queue = [binary]
    while queue:
        current = queue.pop(0)
        data = guest.resolve(current).read_bytes()
        info = read_dynamic(data)
        if info is None:
            continue
        if info.interpreter and current == binary and not guest.resolve(info.interpreter).is_file():
            raise UserError(f"{what} needs the dynamic linker {info.interpreter}, which the rootfs lacks",
                            "install the guest's C library (e.g. --extra-packages libc6), or use a static agent")
        origin = posixpath.dirname(current)
        search = search_path(info.search, origin, dirs)
        for name in info.needed:
            if name in seen:
                continue
            seen.add(name)
            found = next((posixpath.join(d, name) for d in search
                          if guest.resolve(posixpath.join(d, name)).is_file()), None)
            if found is None:
                raise UserError(f"{what} needs {name} (from {current}), which is not in the rootfs's library path "
                                f"({', '.join(search)})", "add the package that ships it to --extra-packages, "
                                "or use a static agent")
            queue.append(found)
