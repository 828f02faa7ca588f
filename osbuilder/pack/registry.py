"""Every packer behind one interface, in one registry.

A packer has a name (the `--format` value and the subcommand), a default file name, an
options dataclass whose fields are settings, and `pack(tree, out, options, context)`.
Files that belong beside an artifact (its sidecars) follow one naming rule: the name the
packer gives them, in the artifact's directory, whichever command wrote it.
`build` loops over PACKERS; the `initrd`/`image`/`iso` subcommands and the `--format`
choices come from it. A new format is one packer module plus its line in catalog.py, from
which the packers are imported here.
"""

from __future__ import annotations

from osbuilder.foundation.errors import lookup
from osbuilder.pack.base import Packer, PackContext
from osbuilder.pack.catalog import PACKER_CATALOG

PACKERS: dict[str, Packer] = {name: entry.load() for name, entry in PACKER_CATALOG.items()}


def packer_names() -> tuple[str, ...]:
    return tuple(PACKERS)


def get_packer(name: str) -> Packer:
    return lookup(PACKERS, name, "format")


def runtime_slot_keys() -> tuple[str, ...]:
    """The keys of Kata's hypervisor tables that name an artifact, the preferred first."""
    slots = sorted((p.runtime_slot for p in PACKERS.values() if p.runtime_slot), key=lambda slot: slot.preference)
    return tuple(dict.fromkeys(slot.key for slot in slots))


__all__ = ["PACKERS", "Packer", "PackContext", "get_packer", "packer_names", "runtime_slot_keys"]
