"""`--slim`: after provisioning, remove what the recipe's `[slim]` rules name, so an initrd
(unpacked into guest RAM) costs less memory and boot time.

The rules are data: packages whose files go (the package manager and its database,
interpreters nothing needs) and paths or globs (gconv modules, locales, caches, headers,
static libraries). Scripts whose interpreter went with them go too. The agent, /sbin/init,
the launcher and the recipe's tools are never removed; the closure check that follows refuses
a tree in which anything left lacks what it needs.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from osbuilder.foundation.fsutil import GuestRoot
from osbuilder.rootfs.closure import SCRIPT_LACKS, ClosureScan

ORPHANED_SCRIPTS = "scripts whose interpreter was removed"


@dataclass(frozen=True)
class SlimRule:
    rule: str  # "package perl-base", a path glob, or ORPHANED_SCRIPTS
    files: int
    bytes: int

    def as_json(self) -> dict[str, object]:
        return {"rule": self.rule, "files": self.files, "bytes": self.bytes}


@dataclass(frozen=True)
class SlimRecord:
    rules: tuple[SlimRule, ...]
    packages: tuple[str, ...]  # the packages whose files were removed

    @property
    def files(self) -> int:
        return sum(rule.files for rule in self.rules)

    @property
    def bytes(self) -> int:
        return sum(rule.bytes for rule in self.rules)

    def as_json(self) -> dict[str, object]:
        return {"files": self.files, "bytes": self.bytes, "packages": list(self.packages),
                "rules": [rule.as_json() for rule in self.rules]}


class Slimmer:
    def __init__(self, guest: GuestRoot, protected: tuple[str, ...]) -> None:
        self.guest = guest
        # Compared as the files they are inside the tree, whatever links lead to them.
        self.protected = {os.path.realpath(guest.resolve(path)) for path in protected if guest.lexists(path)}

    def _remove(self, guest_path: str) -> tuple[int, int]:
        """Remove one path (a directory with everything in it); (files, bytes) removed."""
        host = self.guest.resolve(guest_path, follow_final=False)
        try:
            info = os.lstat(host)
        except FileNotFoundError:
            return 0, 0
        if stat.S_ISDIR(info.st_mode):
            files = size = 0
            for directory, subdirs, names in os.walk(host):
                for name in names + [d for d in subdirs if os.path.islink(os.path.join(directory, d))]:
                    if os.path.realpath(os.path.join(directory, name)) in self.protected:
                        return self._remove_children(guest_path)
                    entry = os.lstat(os.path.join(directory, name))
                    files += 1
                    size += entry.st_size if stat.S_ISREG(entry.st_mode) else 0
            self.guest.remove(guest_path)
            return files, size
        if os.path.realpath(host) in self.protected and not stat.S_ISLNK(info.st_mode):
            return 0, 0
        os.unlink(host)
        return 1, info.st_size if stat.S_ISREG(info.st_mode) else 0

    def _remove_children(self, guest_path: str) -> tuple[int, int]:
        """A directory that holds something protected: remove around it."""
        files = size = 0
        for name in sorted(os.listdir(self.guest.resolve(guest_path))):
            removed = self._remove(f"{guest_path.rstrip('/')}/{name}")
            files, size = files + removed[0], size + removed[1]
        return files, size

    def run(self, package_files: dict[str, tuple[str, ...]], paths: tuple[str, ...]) -> SlimRecord:
        rules = []
        for name, owned in sorted(package_files.items()):
            files = size = 0
            directories = []
            for path in owned:
                # Directories (and links to them, like a merged /usr's /sbin) are shared between
                # packages: only emptied ones go, below.
                if self.guest.resolve(path).is_dir():
                    directories.append(path)
                    continue
                removed = self._remove(path)
                files, size = files + removed[0], size + removed[1]
            for directory in sorted(directories, key=len, reverse=True):  # emptied ones only
                host = self.guest.resolve(directory, follow_final=False)
                if host.is_dir() and not host.is_symlink() and not any(host.iterdir()):
                    host.rmdir()
            rules.append(SlimRule(f"package {name}", files, size))
        for pattern in paths:
            files = size = 0
            for path in self.guest.glob(pattern):
                removed = self._remove(path)
                files, size = files + removed[0], size + removed[1]
            rules.append(SlimRule(pattern, files, size))
        rules.append(self._orphaned_scripts())
        return SlimRecord(tuple(rules), tuple(sorted(package_files)))

    def _orphaned_scripts(self) -> SlimRule:
        files = size = 0
        while True:
            orphans = {m.path for m in ClosureScan(self.guest).scan()
                       if m.kind in SCRIPT_LACKS}
            orphans -= {path for path in orphans if os.path.realpath(self.guest.resolve(path)) in self.protected}
            if not orphans:
                return SlimRule(ORPHANED_SCRIPTS, files, size)
            for path in sorted(orphans):
                removed = self._remove(path)
                files, size = files + removed[0], size + removed[1]
