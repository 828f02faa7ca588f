"""Local package repositories for distributions whose mirrors the test machines cannot reach.

Each builder makes a real, signed repository in the format its package manager reads, and
`serve_directory` puts it on a real HTTP server on 127.0.0.1, so osbuilder's install path runs
for real (mmdebstrap, dnf, the Python apk installer) against it. Nothing here is a mock of
the package manager; only the mirror is local.
"""

from __future__ import annotations

import functools
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Iterator

from tests.http_server import serving


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """A real HTTP server for `directory` on 127.0.0.1; yields its base URL."""
    yield from serving(functools.partial(_QuietHandler, directory=str(directory)))


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, argv))} failed:\n{proc.stderr}{proc.stdout}"
    return proc


@dataclass(frozen=True)
class GpgKey:
    """A throwaway OpenPGP signing key in its own GnuPG home."""

    home: Path
    name: str

    @classmethod
    def create(cls, home: Path, name: str) -> "GpgKey":
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        run(["gpg", "--homedir", home, "--batch", "--passphrase", "", "--quick-gen-key", name,
             "rsa2048", "sign", "never"])
        return cls(home, name)

    def export(self, path: Path, armor: bool = False) -> Path:
        run(["gpg", "--homedir", self.home, "--batch", "--yes", *(["--armor"] if armor else []),
             "--output", path, "--export", self.name])
        return path

    def gpg(self, *args: str | Path) -> subprocess.CompletedProcess:
        return run(["gpg", "--homedir", self.home, "--batch", "--yes", "--pinentry-mode", "loopback",
                    "--passphrase", "", "--local-user", self.name, *args])
