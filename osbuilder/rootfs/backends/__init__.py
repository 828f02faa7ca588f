"""Package-manager backends. A recipe names one; adding a distribution that uses an
existing package manager needs no code, and a new package manager is one module here
plus its entry in BACKEND_MODULES. A backend's module is imported when a recipe names it:
what only reads a guest's records (the packers) imports none."""

from __future__ import annotations

import functools
import importlib

from osbuilder.foundation.errors import lookup
from osbuilder.rootfs.backends.base import Backend, InstallRequest, Package

# name -> (module, class)
BACKEND_MODULES: dict[str, tuple[str, str]] = {
    "apt": ("osbuilder.rootfs.backends.apt", "AptBackend"),
    "dnf": ("osbuilder.rootfs.backends.dnf", "DnfBackend"),
    "apk": ("osbuilder.rootfs.backends.apk", "ApkBackend"),
}


@functools.cache  # one instance of each backend, however many recipes name it
def get_backend(name: str) -> Backend:
    module, cls = lookup(BACKEND_MODULES, name, "backend")
    return getattr(importlib.import_module(module), cls)()


__all__ = ["Backend", "InstallRequest", "Package", "BACKEND_MODULES", "get_backend"]
