"""The apk backend: Alpine's package format, installed in Python (see backend.py)."""

from osbuilder.rootfs.backends.apk.backend import ApkBackend

__all__ = ["ApkBackend"]
