"""Unpacking a tarball into a guest tree without ever touching the host outside it.

Every member is checked before anything is written (so a refused archive leaves nothing
half-unpacked): no absolute names, no `..`, no symlink whose relative target climbs out of
the tree, no hard link to anything but a path inside it, no device node unless the payload
allows them. Then every member is written through GuestRoot, which resolves links inside
the tree and never writes through one, so even a link that an earlier member planted (or
the tree already had) cannot lead a later member onto the host. Python's tarfile data filter
is the model; absolute symlink targets are allowed because in a guest they mean the guest's
own paths (/etc/resolv.conf -> /run/...).
"""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from osbuilder.foundation.documents import DAMAGED_ARCHIVE
from osbuilder.foundation.errors import UserError
from osbuilder.foundation.fsutil import GuestRoot, set_owner_and_time
from osbuilder.foundation.runner import Runner
from osbuilder.read.tarballs import plain_tarball


@dataclass(frozen=True)
class Unpacked:
    members: int
    files: tuple[str, ...]  # guest paths of the regular files written


def _refuse(archive: Path, member: str, why: str) -> UserError:
    return UserError(f"{archive}: member '{member}' {why}", "fix the archive; nothing was unpacked")


def guest_name(archive: Path, member_name: str, what: str = "has") -> str | None:
    """The guest path of an archive name ("./usr/bin/x" -> "/usr/bin/x"); None for the top."""
    if member_name.startswith("/"):
        raise _refuse(archive, member_name, f"{what} an absolute name")
    parts = [p for p in member_name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(archive, member_name, f"{what} a '..' component")
    return "/" + "/".join(parts) if parts else None


def check_member(archive: Path, member: tarfile.TarInfo, name: str, allow_devices: bool) -> None:
    if member.issym():
        target = member.linkname
        if not target.startswith("/"):
            # Relative to the tree's top: a target that needs more '..' than it has depth leaves it.
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name).lstrip("/") or ".", target))
            if resolved == ".." or resolved.startswith("../"):
                raise _refuse(archive, member.name, f"is a symlink that leaves the tree ({target})")
    elif member.islnk():
        link = member.linkname
        if link.startswith("/") or ".." in link.split("/") or guest_name(archive, link) is None:
            raise _refuse(archive, member.name, f"is a hard link outside the tree ({link})")
    elif member.ischr() or member.isblk():
        if not allow_devices:
            raise _refuse(archive, member.name, "is a device node, which this payload may not hold")
    elif not (member.isdir() or member.isreg() or member.isfifo()):
        raise _refuse(archive, member.name, "is of a type osbuilder does not unpack")


NAME_MAX = 255  # bytes of one path component, as Linux allows
PATH_MAX = 4096
LINK_HOPS = 40  # symlinks followed resolving one name, as Linux's ELOOP limit


def _through_links(archive: Path, member: str, path: str, links: dict[str, str]) -> str:
    """`path` with every archive symlink among its directories resolved inside the tree, so
    the checks see where a member would land; a loop is refused."""
    parts = [p for p in path.split("/") if p]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            resolved = resolved[:-1]
            continue
        candidate = "/" + "/".join([*resolved, part])
        if candidate in links and parts:  # a directory of the path is an archive symlink
            hops += 1
            if hops > LINK_HOPS:
                raise _refuse(archive, member, "lies under a symlink loop")
            target = links[candidate]
            parts = [p for p in target.split("/") if p] + parts
            resolved = [] if target.startswith("/") else resolved
            continue
        resolved.append(part)
    return "/" + "/".join(resolved)


def check_archive(archive: Path, members: list[tuple[tarfile.TarInfo, str | None]], allow_devices: bool) -> None:
    """Every member checked before one is written: each alone (check_member), and against
    the others: names the kernel can hold, no member under a symlink loop, and hard links
    only to regular files reached without a symlinked directory."""
    links: dict[str, str] = {}
    regular: set[str] = set()
    for member, name in members:
        if name is None:
            continue
        check_member(archive, member, name, allow_devices)
        encoded = name.encode(errors="surrogateescape")
        if len(encoded) > PATH_MAX or any(len(part) > NAME_MAX for part in encoded.split(b"/")):
            raise _refuse(archive, member.name[:80] + "...", f"has a name longer than Linux allows "
                          f"({NAME_MAX} bytes a component, {PATH_MAX} in all)")
        where = _through_links(archive, member.name, name, links)
        if member.issym():
            links[where] = member.linkname
        elif member.islnk():
            target = guest_name(archive, member.linkname) or "/"
            if _through_links(archive, member.name, target, links) != target:
                raise _refuse(archive, member.name, f"is a hard link through a symlinked directory ({member.linkname})")
            if target in links:
                raise _refuse(archive, member.name, f"is a hard link to a symlink ({member.linkname})")
            if target not in regular:
                raise _refuse(archive, member.name, f"is a hard link to no earlier file of the archive "
                              f"({member.linkname})")
            regular.add(where)
        elif member.isreg():
            regular.add(where)
        if not member.issym():  # a later member replaces an earlier link of its name
            links.pop(where, None)


def check_tarball(archive: Path, workdir: Path, runner: Runner, allow_devices: bool = False) -> None:
    """The whole of `archive` checked as safe_extract checks it, writing nothing: for inputs
    refused before a build's staging exists."""
    plain = plain_tarball(archive, workdir, runner)
    try:
        with tarfile.open(plain) as tar:
            check_archive(archive, [(m, guest_name(archive, m.name)) for m in tar.getmembers()], allow_devices)
    except DAMAGED_ARCHIVE as exc:
        raise UserError(f"'{archive}' is not a readable tarball ({exc})", "pass a complete tar archive") from None
    finally:
        if plain != archive:
            plain.unlink(missing_ok=True)


def safe_extract(archive: Path, guest: GuestRoot, workdir: Path, runner: Runner, *,
                 allow_devices: bool = False, owners: bool = True,
                 check_names: Callable[[set[str]], None] | None = None) -> Unpacked:
    """Unpack `archive` (any compression) over the tree; refuse it whole on any bad member,
    or when `check_names` refuses the set of guest paths it holds."""
    plain = plain_tarball(archive, workdir, runner)
    try:
        with tarfile.open(plain) as tar:
            members = [(m, guest_name(archive, m.name)) for m in tar.getmembers()]
            check_archive(archive, members, allow_devices)
            if check_names is not None:
                check_names({name for _, name in members if name is not None})
            files = []
            chown = owners and runner.privilege.sets_owners
            for member, name in members:
                if name is None:
                    continue
                mode = member.mode & 0o7777
                if member.isdir():
                    path = guest.mkdir(name, mode)
                    os.chmod(path, mode)
                elif member.isreg():
                    source = tar.extractfile(member)
                    assert source is not None
                    path = guest.write_stream(name, source, mode)
                    files.append(name)
                elif member.issym():
                    path = guest.symlink(name, member.linkname)
                elif member.islnk():
                    path = guest.hardlink(name, guest_name(archive, member.linkname) or "/")
                elif member.isfifo():
                    path = guest.make_special(name, stat.S_IFIFO | mode, 0)
                else:
                    kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
                    path = guest.make_special(name, kind | mode, os.makedev(member.devmajor, member.devminor))
                set_owner_and_time(path, member.uid, member.gid, mode, member.mtime, chown)
    except DAMAGED_ARCHIVE as exc:
        raise UserError(f"'{archive}' is not a readable tarball ({exc})", "pass a complete tar archive") from None
    finally:
        if plain != archive:
            plain.unlink(missing_ok=True)
    return Unpacked(len(members), tuple(files))
