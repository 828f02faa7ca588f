"""apk's version ordering and dependency atoms (`name`, `!name`, `name>=1.2-r0`, `so:...`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

# Suffix ranks: pre-releases sort before the plain version, post-release markers after it.
_SUFFIXES = {"alpha": 0, "beta": 1, "pre": 2, "rc": 3, "": 4, "cvs": 5, "svn": 6, "git": 7, "hg": 8, "p": 9}
_VERSION = re.compile(r"^(\d+(?:\.\d+)*)([a-z]?)((?:_(?:alpha|beta|pre|rc|cvs|svn|git|hg|p)\d*)*)(?:~[0-9a-f]+)?"
                      r"(?:-r(\d+))?$")


@total_ordering
@dataclass(frozen=True)
class Version:
    text: str

    def _key(self) -> tuple:
        match = _VERSION.match(self.text)
        if match is None:  # unparsable versions order by their text, after every parsable one
            return ((1 << 62,), self.text)
        numbers, letter, suffixes, revision = match.groups()
        suffix_key = tuple((_SUFFIXES[name], int(number or 0))
                           for name, number in re.findall(r"_([a-z]+)(\d*)", suffixes))
        return (tuple(int(n) for n in numbers.split(".")), letter, suffix_key + ((_SUFFIXES[""], 0),),
                int(revision or 0))

    def __lt__(self, other: "Version") -> bool:
        return self._key() < other._key()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


_ATOM = re.compile(r"^(!?)([^<>=~!]+)(?:(<=|>=|<|>|=|~)(.+))?$")


@dataclass(frozen=True)
class Atom:
    """One dependency: a name (package, or a virtual such as so:libc.musl-x86_64.so.1), an
    optional version constraint, and whether it is a conflict (`!name`)."""

    name: str
    op: str = ""
    version: str = ""
    conflict: bool = False

    @classmethod
    def parse(cls, text: str) -> "Atom":
        match = _ATOM.match(text.strip())
        if match is None:
            raise ValueError(f"'{text}' is not an apk dependency")
        conflict, name, op, version = match.groups()
        return cls(name, op or "", version or "", bool(conflict))

    def allows(self, version: str | None) -> bool:
        """Whether a provider at `version` satisfies the constraint (unversioned provides satisfy
        only unconstrained atoms)."""
        if not self.op:
            return True
        if version is None:
            return False
        if self.op == "~":
            return version == self.version or version.startswith(self.version + ".") or \
                version.startswith(self.version + "-") or version.startswith(self.version + "_")
        have, want = Version(version), Version(self.version)
        return {"=": have == want, "<": have < want, ">": have > want, "<=": have <= want,
                ">=": have >= want}[self.op]

    def __str__(self) -> str:
        return ("!" if self.conflict else "") + self.name + self.op + self.version
