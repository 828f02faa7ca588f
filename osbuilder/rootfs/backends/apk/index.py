"""APKINDEX records and .PKGINFO files (docs/kata-contract.md, the apk format)."""

from __future__ import annotations

from dataclasses import dataclass, field

from osbuilder.foundation.errors import UserError
from osbuilder.rootfs.backends.apk.version import Atom


@dataclass(frozen=True)
class IndexEntry:
    """One package as a repository's APKINDEX describes it (letter fields kept for the
    installed database, which uses the same letters)."""

    fields: tuple[tuple[str, str], ...]
    repository: str

    def get(self, letter: str, default: str = "") -> str:
        return next((value for key, value in self.fields if key == letter), default)

    @property
    def name(self) -> str:
        return self.get("P")

    @property
    def version(self) -> str:
        return self.get("V")

    @property
    def checksum(self) -> str:
        return self.get("C")

    @property
    def file_name(self) -> str:
        return f"{self.name}-{self.version}.apk"

    @property
    def depends(self) -> list[Atom]:
        return [Atom.parse(text) for text in self.get("D").split()]

    @property
    def install_if(self) -> list[Atom]:
        return [Atom.parse(text) for text in self.get("i").split()]

    @property
    def provides(self) -> list[tuple[str, str | None]]:
        """(name, version or None) for the package itself and each p: entry."""
        provided: list[tuple[str, str | None]] = [(self.name, self.version)]
        for text in self.get("p").split():
            name, _, version = text.partition("=")
            provided.append((name, version or None))
        return provided

    @property
    def priority(self) -> int:
        return int(self.get("k", "0") or 0)


def parse_apkindex(text: str, repository: str, source: str) -> list[IndexEntry]:
    entries = []
    for block in text.split("\n\n"):
        fields = []
        for line in block.splitlines():
            if not line.strip():
                continue
            if len(line) < 2 or line[1] != ":":
                raise UserError(f"{source}: malformed APKINDEX line '{line[:60]}'", "check the repository")
            fields.append((line[0], line[2:]))
        if fields:
            entry = IndexEntry(tuple(fields), repository)
            if not (entry.name and entry.version and entry.checksum):
                raise UserError(f"{source}: an APKINDEX record lacks P:, V: or C:", "check the repository")
            entries.append(entry)
    return entries


@dataclass(frozen=True)
class PkgInfo:
    values: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "PkgInfo":
        values: dict[str, list[str]] = {}
        for line in text.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            key, sep, value = line.partition(" = ")
            if sep:
                values.setdefault(key.strip(), []).append(value.strip())
        return cls(values)

    def first(self, key: str) -> str:
        return (self.values.get(key) or [""])[0]

    def all(self, key: str) -> list[str]:
        return [item for value in self.values.get(key, []) for item in value.split()]
