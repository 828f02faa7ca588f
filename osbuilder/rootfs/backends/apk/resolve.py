"""Choosing the packages for a world (the requested names) from repository indexes, and the
order to install them in (dependencies first)."""

from __future__ import annotations

from collections import defaultdict

from osbuilder.foundation.errors import UserError
from osbuilder.rootfs.backends.apk.index import IndexEntry
from osbuilder.rootfs.backends.apk.version import Atom, Version


class Resolver:
    def __init__(self, entries: list[IndexEntry]) -> None:
        self.providers: dict[str, list[tuple[IndexEntry, str | None]]] = defaultdict(list)
        for entry in entries:
            for name, version in entry.provides:
                self.providers[name].append((entry, version))
        self.entries = entries
        self.chosen: dict[str, IndexEntry] = {}
        self.needed_by: dict[str, str] = {}

    def _candidates(self, atom: Atom) -> list[IndexEntry]:
        return [entry for entry, version in self.providers.get(atom.name, []) if atom.allows(version)]

    def _satisfied(self, atom: Atom) -> bool:
        return any(self.chosen.get(entry.name) == entry for entry in self._candidates(atom))

    def _pick(self, atom: Atom, wanted_by: str) -> IndexEntry:
        candidates = self._candidates(atom)
        if not candidates:
            known = "" if atom.name in self.providers else " (no package has that name or provides it)"
            raise UserError(f"apk: nothing satisfies '{atom}' (needed by {wanted_by}){known}",
                            "check the package names, --release and --mirror")
        # A package of the very name wins over virtual providers; then priority; then the newest.
        return max(candidates, key=lambda e: (e.name == atom.name, e.name in self.chosen, e.priority,
                                              Version(e.version), e.name))

    def add(self, atom: Atom, wanted_by: str) -> None:
        if atom.conflict or self._satisfied(atom):
            return
        entry = self._pick(atom, wanted_by)
        existing = self.chosen.get(entry.name)
        if existing is not None and existing != entry:
            raise UserError(f"apk: '{atom}' (needed by {wanted_by}) needs {entry.name} {entry.version}, but "
                            f"{existing.version} is already chosen (for {self.needed_by[entry.name]})",
                            "relax the version constraints or the package list")
        self.chosen[entry.name] = entry
        self.needed_by[entry.name] = wanted_by
        for dependency in entry.depends:
            self.add(dependency, f"{entry.name}-{entry.version}")

    def _install_if_round(self) -> bool:
        newest: dict[str, IndexEntry] = {}
        for entry in self.entries:
            if entry.get("i") and (entry.name not in newest or Version(entry.version) > Version(newest[entry.name].version)):
                newest[entry.name] = entry
        added = False
        for entry in newest.values():
            if entry.name not in self.chosen and all(self._satisfied(atom) for atom in entry.install_if):
                self.add(Atom(entry.name, "=", entry.version), "install_if")
                added = True
        return added

    def resolve(self, world: list[Atom]) -> list[IndexEntry]:
        for atom in world:
            self.add(atom, "the package list")
        while self._install_if_round():
            pass
        for entry in self.chosen.values():
            for atom in entry.depends + world:
                if atom.conflict and any(self.chosen.get(c.name) == c for c in self._candidates(
                        Atom(atom.name, atom.op, atom.version))):
                    raise UserError(f"apk: {entry.name} conflicts with '{atom.name}', which is also chosen",
                                    "drop one of them from the package list")
        return self._ordered()

    def _ordered(self) -> list[IndexEntry]:
        order: list[IndexEntry] = []
        state: dict[str, str] = {}

        def visit(entry: IndexEntry) -> None:
            if state.get(entry.name):
                return  # done, or in progress (a dependency cycle: apk installs those in any order)
            state[entry.name] = "visiting"
            for atom in entry.depends:
                if atom.conflict:
                    continue
                for candidate in self._candidates(atom):
                    if self.chosen.get(candidate.name) == candidate:
                        visit(candidate)
                        break
            state[entry.name] = "done"
            order.append(entry)

        for name in sorted(self.chosen):
            visit(self.chosen[name])
        return order
