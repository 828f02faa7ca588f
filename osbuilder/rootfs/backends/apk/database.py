"""The installed-package database apk keeps in a tree (docs/kata-contract.md, the apk format), so the guest's
own apk can manage what osbuilder installed: /lib/apk/db/{installed,scripts.tar,triggers,lock}
and /etc/apk/{world,repositories,arch,keys/}."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field

from osbuilder.foundation.fsutil import GuestRoot
from osbuilder.rootfs.backends.apk.index import IndexEntry

INSTALLED = "/lib/apk/db/installed"
SCRIPTS = "/lib/apk/db/scripts.tar"
# Index letters that describe a package (the file list is written after them).
PACKAGE_LETTERS = "CPVASITULomtcDpirk"


@dataclass
class InstalledFile:
    name: str
    owner: tuple[int, int, int]  # uid, gid, mode
    checksum: str  # Q1 + base64 sha1


@dataclass
class InstalledPackage:
    entry: IndexEntry
    replaces: list[str] = field(default_factory=list)
    directories: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    files: list[InstalledFile] = field(default_factory=list)
    scripts: dict[str, bytes] = field(default_factory=dict)

    def record(self) -> str:
        lines = [f"{letter}:{value}" for letter in PACKAGE_LETTERS
                 for key, value in self.entry.fields if key == letter]
        if self.replaces and not self.entry.get("r"):
            lines.append(f"r:{' '.join(self.replaces)}")
        by_directory: dict[str, list[InstalledFile]] = {}
        for item in self.files:
            by_directory.setdefault(item.name.rpartition("/")[0], []).append(item)
        for directory in sorted((set(self.directories) | set(by_directory)) - {""}):
            lines.append(f"F:{directory}")
            owner = self.directories.get(directory, (0, 0, 0o755))
            if owner != (0, 0, 0o755):
                lines.append(f"M:{owner[0]}:{owner[1]}:{owner[2]:o}")
            lines += _file_lines(by_directory.get(directory, []))
        return "\n".join(lines + _file_lines(by_directory.get("", []))) + "\n"


def _file_lines(files: list[InstalledFile]) -> list[str]:
    lines = []
    for item in files:
        lines.append(f"R:{item.name.rpartition('/')[2]}")
        if item.owner != (0, 0, 0o644):
            lines.append(f"a:{item.owner[0]}:{item.owner[1]}:{item.owner[2]:o}")
        if item.checksum:
            lines.append(f"Z:{item.checksum}")
    return lines


def write_database(guest: GuestRoot, packages: list[InstalledPackage], world: list[str], repositories: list[str],
                   arch: str, keys: dict[str, bytes], epoch: int) -> None:
    guest.write_text(INSTALLED, "\n".join(package.record() for package in packages) + ("\n" if packages else ""))
    scripts = io.BytesIO()
    with tarfile.open(fileobj=scripts, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for package in packages:
            for kind, body in sorted(package.scripts.items()):
                info = tarfile.TarInfo(f"{package.entry.name}-{package.entry.version}.{package.entry.checksum}{kind}")
                info.size, info.mode, info.mtime = len(body), 0o755, epoch
                tar.addfile(info, io.BytesIO(body))
    guest.write_bytes(SCRIPTS, scripts.getvalue())
    guest.write_text("/lib/apk/db/triggers", "")
    guest.write_text("/lib/apk/db/lock", "")
    guest.write_text("/etc/apk/world", "".join(f"{name}\n" for name in sorted(set(world))))
    guest.write_text("/etc/apk/repositories", "".join(f"{url}\n" for url in repositories))
    guest.write_text("/etc/apk/arch", f"{arch}\n")
    for name, body in sorted(keys.items()):
        guest.write_bytes(f"/etc/apk/keys/{name}", body)


def read_installed(guest: GuestRoot) -> list[dict[str, str]]:
    """Each installed package's P/V/A fields."""
    path = guest.resolve(INSTALLED)
    if not path.is_file():
        return []
    packages = []
    for block in path.read_text(errors="replace").split("\n\n"):
        fields = {line[0]: line[2:] for line in block.splitlines() if line[1:2] == ":" and line[0] in "PVA"}
        if "P" in fields:
            packages.append(fields)
    return packages


def installed_files(guest: GuestRoot, name: str) -> tuple[str, ...]:
    """The guest paths of package `name`'s files (R: lines under their F: directory)."""
    path = guest.resolve(INSTALLED)
    if not path.is_file():
        return ()
    for block in path.read_text(errors="replace").split("\n\n"):
        lines = block.splitlines()
        if f"P:{name}" not in lines:
            continue
        files, directory = [], ""
        for line in lines:
            if line.startswith("F:"):
                directory = line[2:]
            elif line.startswith("R:"):
                files.append("/" + "/".join(p for p in (directory, line[2:]) if p))
        return tuple(files)
    return ()
