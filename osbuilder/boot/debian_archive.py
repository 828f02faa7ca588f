"""Packages from Debian's archive for any architecture, without touching the host's apt.

apt-get runs with every state, cache and source-list path pointed into osbuilder's cache,
so the host's /etc/apt, /var/lib/apt and dpkg database are never read for sources or
written. Used for boot kernels (linux-image-<arch>) and the boot shim's busybox.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from osbuilder.foundation.arch import Arch
from osbuilder.foundation.errors import InternalError, UserError
from osbuilder.foundation.runner import DOWNLOAD, PROBE, Runner
from osbuilder.foundation.steps import step

DEFAULT_MIRROR = "http://deb.debian.org/debian"


@dataclass(frozen=True)
class DebianArchive:
    arch: Arch
    cache: Path  # everything apt writes goes under here
    release: str = "bookworm"
    mirror: str = DEFAULT_MIRROR

    @property
    def state(self) -> Path:
        # Absolute: apt reads a relative Dir:: path as relative to /etc/apt.
        return Path(os.path.abspath(self.cache)) / "apt" / f"{self.release}-{self.arch.debian}"

    def _apt_options(self) -> list[str]:
        state = self.state
        return [
            f"-oDir::State={state}", f"-oDir::State::Lists={state}/lists", "-oDir::State::status=/dev/null",
            f"-oDir::Cache={state}", f"-oDir::Cache::archives={state}/archives",
            f"-oDir::Etc::SourceList={state}/sources.list", f"-oDir::Etc::SourceParts={state}/sources.list.d",
            "-oDir::Etc::Preferences=/dev/null", f"-oDir::Etc::PreferencesParts={state}/preferences.d",
            f"-oAPT::Architecture={self.arch.debian}", f"-oAPT::Architectures::={self.arch.debian}",
            "-oDebug::NoLocking=1", "-oAcquire::Languages=none", "-oAPT::Sandbox::User=root",
        ]

    def update(self, runner: Runner) -> None:
        """Fetch the package lists once per cache (delete the cache to refresh)."""
        state = self.state
        marker = state / ".updated"
        if marker.exists():
            return
        for sub in ("lists/partial", "archives/partial", "sources.list.d", "preferences.d"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        # The release suite only: its kernels are the point release's, and the security
        # archive's per-arch indexes are often mid-sync on mirrors, which fails the update.
        (state / "sources.list").write_text(f"deb [arch={self.arch.debian}] {self.mirror} {self.release} main\n")
        with step(f"Fetching Debian {self.release}'s package lists for {self.arch.debian} from {self.mirror} "
                  "(once per cache)"):
            runner.run(["apt-get", *self._apt_options(), "-q", "update"], limit=DOWNLOAD,
                       hint=f"check that {self.mirror} is reachable")
        marker.touch()

    def depends_of(self, package: str, runner: Runner) -> list[str]:
        out = runner.run(["apt-cache", *self._apt_options(), "depends", package],
                         hint=f"no package '{package}' for {self.arch.debian}", limit=PROBE).stdout
        return re.findall(r"^\s+Depends: (\S+)$", out, re.M)

    def download_size(self, package: str, runner: Runner) -> int | None:
        """The candidate's size as the index records it, for the progress line."""
        out = runner.run(["apt-cache", *self._apt_options(), "show", "--no-all-versions", package],
                         hint=f"no package '{package}' for {self.arch.debian}", limit=PROBE).stdout
        found = re.search(r"^Size: (\d+)$", out, re.M)
        return int(found.group(1)) if found else None

    def download(self, package: str, runner: Runner) -> Path:
        """The .deb of `package` (its candidate version), downloaded once into the cache."""
        self.update(runner)
        into = self.cache / "debs"
        into.mkdir(parents=True, exist_ok=True)
        existing = sorted(into.glob(f"{package}_*_{self.arch.debian}.deb"))
        if existing:
            return existing[-1]
        partial = into / f".download-{os.getpid()}"
        partial.mkdir(exist_ok=True)
        size = self.download_size(package, runner)
        with step(f"Downloading {package} for {self.arch.debian}"
                  + (f" ({size / 2**20:.0f} MiB, once per cache)" if size else " (once per cache)")):
            runner.run(["apt-get", *self._apt_options(), "-q", "download", package], cwd=partial, limit=DOWNLOAD,
                       hint=f"check that {self.mirror} has {package} for {self.arch.debian}")
        debs = list(partial.glob("*.deb"))
        if len(debs) != 1:
            raise InternalError(f"apt-get download {package} gave {len(debs)} packages, not one")
        target = into / debs[0].name
        os.replace(debs[0], target)
        partial.rmdir()
        return target

    def kernel_package(self, runner: Runner) -> Path:
        """Debian's current kernel for the architecture: linux-image-<version>-<flavour>.deb."""
        self.update(runner)
        flavour = self.arch.debian_kernel_flavour
        versioned = [d for d in self.depends_of(f"linux-image-{flavour}", runner) if d.startswith("linux-image-")]
        if not versioned:
            raise UserError(f"linux-image-{flavour} names no kernel package", "check the mirror")
        return self.download(versioned[0], runner)
