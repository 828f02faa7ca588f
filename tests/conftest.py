"""Shared fixtures. Expensive things (bootstrapped trees, foreign agents) are built once
per session and kept in a cache directory keyed by their inputs, so reruns are fast."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# Helpers assert too; let their failures explain themselves.
pytest.register_assert_rewrite("tests.helpers")

REPO = Path(__file__).resolve().parent.parent


FAKED_TESTS = "OSBUILDER_TESTS_UNDER_FAKEROOT"


def pytest_configure(config) -> None:
    """Tests' scratch directories live in the checkout (.cache/pytest-tmp, emptied at the start
    of each run and kept after it for a look at what failed), never in /tmp.

    An ordinary user's run goes on under fakeroot, as osbuilder's own unprivileged builds
    do: the unit tests provision small guests in-process (device nodes, root owners), which
    fakeroot records. The slow tests that need real root (mounts, chroot, another user)
    say so when they fail."""
    if os.geteuid() != 0 and not os.environ.get(FAKED_TESTS) and shutil.which("fakeroot"):
        os.execvpe("fakeroot", ["fakeroot", "--", sys.executable, "-m", "pytest", *sys.argv[1:]],
                   {**os.environ, FAKED_TESTS: "1"})
    if not config.option.basetemp:
        (REPO / ".cache").mkdir(exist_ok=True)  # pytest makes basetemp, not its parent (a fresh checkout has none)
        config.option.basetemp = str(REPO / ".cache" / "pytest-tmp")


@pytest.fixture(autouse=True)
def private_default_cache(tmp_path_factory, monkeypatch):
    """osbuilder caches by default under $XDG_CACHE_HOME: each test gets its own, so a build
    without --cache-dir starts cold, as before caching was the default, and nothing is
    written under the invoking user's home."""
    xdg = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    yield xdg
    subprocess.run(["rm", "-rf", "--one-file-system", str(xdg)], check=False)


def cache_root() -> Path:
    path = Path(os.environ.get("OSBUILDER_TEST_CACHE", REPO / ".cache" / "test"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_cli(*args: str | os.PathLike[str], env: dict[str, str] | None = None, timeout: float = 1800) -> CliResult:
    """Run the real command line, as a user would."""
    full_env = dict(os.environ)
    full_env.pop("SOURCE_DATE_EPOCH", None)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "osbuilder", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    return cache_root()


def _extract_busybox(arch_debian: str, cache: Path) -> Path:
    """A real static ELF for `arch_debian`, unpacked from Debian's busybox-static package
    (fetched from the release suite with osbuilder's own apt wrapper, cached).

    It stands in for the agent: rootfs tests need a genuine executable of each arch."""
    from osbuilder.foundation.arch import get_arch
    from osbuilder.boot.debian_archive import DebianArchive
    from osbuilder.boot.kernel import unpack_deb
    from osbuilder.foundation.runner import Runner

    deb = DebianArchive(get_arch(arch_debian), cache / "agents").download("busybox-static", Runner())
    return unpack_deb(deb, cache / "agents" / "unpacked" / deb.stem, Runner()) / "bin" / "busybox"


@pytest.fixture(scope="session")
def agent_x86_64(cache_dir: Path) -> Path:
    return _extract_busybox("amd64", cache_dir)


@pytest.fixture(scope="session")
def agent_aarch64(cache_dir: Path) -> Path:
    return _extract_busybox("arm64", cache_dir)


@pytest.fixture
def host_agent() -> Path:
    """busybox-static from the build host: a real x86_64 static ELF (installed by setup.sh)."""
    path = Path("/bin/busybox")
    assert path.is_file(), "busybox-static is missing: run ./setup.sh"
    return path


@pytest.fixture
def server():
    """A real HTTP server on 127.0.0.1 (tests/http_server.py); yields its base URL."""
    from tests.http_server import serve

    yield from serve()
