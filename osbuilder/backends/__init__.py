"""Package-manager backends. A recipe names one; adding a distribution that uses an
existing package manager needs no code."""

from __future__ import annotations

from osbuilder.backends.apt import AptBackend
from osbuilder.backends.base import Backend, BootstrapRequest
from osbuilder.errors import UserError

BACKENDS: dict[str, type[Backend]] = {AptBackend.name: AptBackend}


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]()
    except KeyError:
        raise UserError(f"unknown backend '{name}'", f"use one of: {', '.join(BACKENDS)}") from None


__all__ = ["Backend", "BootstrapRequest", "BACKENDS", "get_backend"]
