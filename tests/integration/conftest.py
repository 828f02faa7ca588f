from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli

INTEGRATION = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items) -> None:
    """Everything under tests/integration is slow (real mmdebstrap, dnf, mkfs, qemu, root):
    `pytest -m "not slow"` is tests/unit alone, whatever a module forgot to mark."""
    for item in items:
        if Path(item.fspath).resolve().is_relative_to(INTEGRATION):
            item.add_marker(pytest.mark.slow)


class RootfsFactory:
    """Builds each (init, arch, flags) tree once per session through the real CLI."""

    def __init__(self, base: Path, cache: Path) -> None:
        self.base = base
        self.cache = cache
        self.built: dict[tuple, Path] = {}

    def get(self, init: str, arch: str, agent: Path | None, *extra: str, env: dict[str, str] | None = None) -> Path:
        """agent None: the probe agent (--probe-agent)."""
        key = (init, arch, str(agent), extra, tuple(sorted((env or {}).items())))
        if key not in self.built:
            out = self.base / f"rootfs-{len(self.built)}-{init}-{arch}"
            chosen = ("--agent", agent) if agent is not None else ("--probe-agent",)
            result = run_cli("rootfs", "--distro", "debian", "--init", init, "--arch", arch, *chosen,
                             "--cache-dir", self.cache, "-o", out, "--json", *extra, env=env)
            assert result.returncode == 0, result.stderr
            report = json.loads(result.stdout)
            assert (report["rootfs"], report["init_mode"], report["arch"]) == (str(out), init, arch)
            if agent is None:  # the probe is never silent about itself
                assert "warning: this guest holds osbuilder's probe agent" in result.stderr
            self.built[key] = out
        return self.built[key]


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory, cache_dir) -> RootfsFactory:
    return RootfsFactory(tmp_path_factory.mktemp("rootfs"), cache_dir)


@pytest.fixture(scope="session")
def boot_cache(cache_dir: Path) -> Path:
    path = cache_dir / "boot"
    path.mkdir(exist_ok=True)
    return path
