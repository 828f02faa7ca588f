"""Package-manager backends. A recipe names one; adding a distribution that uses an
existing package manager needs no code, and a new package manager is one module here
plus its entry in BACKENDS."""

from __future__ import annotations

from osbuilder.foundation.errors import lookup
from osbuilder.rootfs.backends.apt import AptBackend
from osbuilder.rootfs.backends.apk import ApkBackend
from osbuilder.rootfs.backends.dnf import DnfBackend
from osbuilder.rootfs.backends.base import Backend, InstallRequest, Package

BACKENDS: dict[str, Backend] = {backend.name: backend for backend in (AptBackend(), DnfBackend(), ApkBackend())}


def get_backend(name: str) -> Backend:
    return lookup(BACKENDS, name, "backend")


__all__ = ["Backend", "InstallRequest", "Package", "BACKENDS", "get_backend"]
