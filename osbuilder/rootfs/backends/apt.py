"""Debian-family installs through mmdebstrap.

mmdebstrap runs in unshare mode: its mounts live in a private namespace that vanishes with
it, so an interrupted build can never leave the host's /proc or /dev mounted in staging.
It writes a tarball whose entries are owned 0/0, unpacked into the root with those owners.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import lzma
import os
import re
import shlex
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from osbuilder.foundation.cache import downloads_lock, keep_downloads
from osbuilder.foundation.fsutil import GuestRoot, fill_holes_in_tree, remove_tree
from osbuilder.foundation.errors import UserError
from osbuilder.rootfs.backends.base import (RELEASE, SECURITY, UPDATES, Available, Backend, IndexState,
                                            InstallRequest, Package, PackageSource, check_keyring, read_index_file,
                                            recipe_path)
from osbuilder.rootfs.backends.versions import compare_debian
from osbuilder.rootfs.recipe_values import check_mirror, check_plain_name
from osbuilder.rootfs.tarball import extract_tarball
from osbuilder.foundation.privilege import Privilege
from osbuilder.foundation.runner import PACKAGE_MANAGER, PROBE, Runner

log = logging.getLogger("osbuilder")

DPKG_STATUS = "/var/lib/dpkg/status"
DPKG_INFO = "/var/lib/dpkg/info"
MMDEBSTRAP_VERSION = re.compile(r"""^our \$VERSION = ['"]([^'"\s]+)['"];""", re.M)


@dataclass(frozen=True)
class AptSection:
    components: tuple[str, ...] = ("main",)
    variant: str = "required"
    # The archive keyring; empty means mmdebstrap's own choice (the host's Debian keyrings).
    keyring: str = recipe_path()
    # Suites installed beside the release's unless --no-updates ("{release}" is the release):
    # its stable updates on the mirror, and its security fixes.
    updates: tuple[str, ...] = ()
    security: tuple[str, ...] = ()
    # Where the security suites are served (--security-mirror); empty: on the mirror itself.
    security_mirror: str = ""


@dataclass(frozen=True)
class ReleaseFile:
    """A suite's InRelease (or Release) as the mirror serves it."""

    source: PackageSource
    url: str
    text: str

    def field(self, name: str) -> str | None:
        match = re.search(rf"^{name}: (.+)$", self.text, re.M)
        return match[1].strip() if match else None

    def package_indexes(self, components: tuple[str, ...], arch: str) -> dict[str, list[tuple[str, int, str]]]:
        """Each component's binary-<arch> Packages files the SHA256 list names: (sha256, size,
        path), the compressed forms first (what apt fetches)."""
        listed = self.text.partition("\nSHA256:")[2]
        entries = re.findall(r"^ ([0-9a-f]{64})\s+(\d+)\s+(\S+)$", listed.split("\n-----BEGIN PGP SIGNATURE")[0], re.M)
        found: dict[str, list[tuple[str, int, str]]] = {}
        for component in components:
            order = [f"{component}/binary-{arch}/Packages{suffix}" for suffix in (".xz", ".gz", "")]
            found[component] = sorted(((digest, int(size), path) for digest, size, path in entries if path in order),
                                      key=lambda entry: order.index(entry[2]))
        return found


class AptBackend(Backend):
    name = "apt"
    purl_type = "deb"
    Section = AptSection

    def preflight(self, request: InstallRequest, privilege: Privilege) -> None:
        # mmdebstrap's unshare mode maps them; without, it fails deep inside with a mirror hint.
        privilege.require_user_namespace(f"installing {request.distro} with mmdebstrap",
                                         "mmdebstrap's unshare mode sets the guest files' owners")
        check_keyring(request.section.keyring,
                      f"pass --keyring the {request.distro} archive keyring (a .gpg or .asc file)")

    missing_pin_patterns = (r"Version '(?P<version>[^']+)' for '(?P<name>[^']+)' was not found",
                            r"Unable to locate package (?P<name>\S+)")

    def parse_section(self, recipe: Path, table: dict[str, Any]) -> Any:
        section: AptSection = super().parse_section(recipe, table)
        for key in ("components", "updates", "security"):
            for value in getattr(section, key):
                check_plain_name(f"recipe {recipe}", f"apt.{key}", value.replace("{release}", "release"))
        if section.security_mirror:
            check_mirror(f"recipe {recipe}: apt.security_mirror", section.security_mirror)
        return section

    def package_sources(self, release: str, mirror: str, section: Any, updates: bool) -> tuple[PackageSource, ...]:
        sources = [PackageSource(release, mirror, RELEASE)]
        if updates:
            security_url = section.security_mirror or mirror
            sources += [PackageSource(suite.replace("{release}", release), mirror, UPDATES) for suite in section.updates]
            sources += [PackageSource(suite.replace("{release}", release), security_url, SECURITY)
                        for suite in section.security]
        return tuple(dict.fromkeys(sources))

    def _release_file(self, source: PackageSource, request: InstallRequest, workdir: Path, runner: Runner) -> ReleaseFile:
        base = f"{source.url.rstrip('/')}/dists/{source.name}"
        missing: UserError | None = None
        for name in ("InRelease", "Release"):
            try:
                data = read_index_file(f"{base}/{name}", workdir / f"apt-{source.name}-{name}", runner)
            except UserError as exc:  # a mirror may publish only one of them
                missing = exc
                continue
            return ReleaseFile(source, f"{base}/{name}", data.decode(errors="replace"))
        assert missing is not None
        if source.kind == RELEASE:
            raise missing
        flag = "--security-mirror" if source.kind == SECURITY else "--mirror"
        raise UserError(f"the {source.kind} suite {source.name} is not at {source.url} ({base} has no InRelease or "
                        "Release)", f"pass {flag} a mirror that serves it, or --no-updates to install from "
                        f"{request.release} alone")

    def read_indexes(self, request: InstallRequest, workdir: Path, runner: Runner) -> IndexState:
        """The release suite's Date: (when the release last changed) is the epoch; each suite's
        digest is that of the Packages indexes its Release file lists for the build's
        components and arch. Not the Release file itself: the archive re-dates and re-signs
        the update suites at every run whether or not a package changed, which would make
        builds a day apart differ and empty the cache for nothing."""
        section: AptSection = request.section
        epoch = None
        digests = []
        unserved = []
        sources = request.chosen_sources
        # Fetched at once (each is a round trip to its mirror); a refusal is the first
        # source's in order, as when they were read one by one.
        with ThreadPoolExecutor(max_workers=max(len(sources), 1), thread_name_prefix="release-file") as pool:
            releases = list(pool.map(lambda source: self._release_file(source, request, workdir, runner), sources))
        for source, release in zip(sources, releases):
            if source.kind == RELEASE and source.name == request.release:
                epoch = self._date(release)
            indexes = release.package_indexes(section.components, request.arch.debian)
            if not any(indexes.values()):
                if source.kind == RELEASE:
                    raise UserError(f"{release.url} lists no Packages index for {', '.join(section.components)} on "
                                    f"{request.arch.debian}", "check --mirror, --components and --arch")
                # As apt skips it: a suite that no longer serves the arch (bookworm-security
                # dropped s390x when bookworm's LTS began) is no reason to refuse the build.
                log.warning("warning: the %s suite %s publishes nothing for %s (it serves %s): the guest gets no %s "
                            "fixes from it", source.kind, source.name, request.arch.debian,
                            release.field("Architectures") or "other arches", source.kind)
                unserved.append(source.name)
                continue
            listed = "\n".join(f"{digest} {size} {path}" for entries in indexes.values() for digest, size, path in entries)
            digests.append((source.name, hashlib.sha256(listed.encode()).hexdigest()))
        return IndexState(epoch, tuple(digests), tuple(unserved))

    @staticmethod
    def _date(release: ReleaseFile) -> int:
        date = release.field("Date")
        if date is None:
            raise UserError(f"{release.url} gives no Date:", "check --mirror and --release")
        import email.utils  # here: listing recipes (`distros`) reads no Release file

        try:
            return int(email.utils.parsedate_to_datetime(date).timestamp())
        except (TypeError, ValueError):
            raise UserError(f"{release.url}: Date '{date}' is not a date",
                            "check --mirror, or pass --source-date-epoch") from None

    def index_epoch(self, request: InstallRequest, workdir: Path, runner: Runner) -> int | None:
        """The Date: of the release suite's InRelease (or Release) file: when the archive last changed."""
        return self.read_indexes(request, workdir, runner).epoch

    def available_versions(self, request: InstallRequest, workdir: Path, runner: Runner) -> list[Available]:
        section: AptSection = request.section
        found: list[Available] = []
        for source in request.chosen_sources:
            release = self._release_file(source, request, workdir, runner)
            for component, entries in release.package_indexes(section.components, request.arch.debian).items():
                if not entries:
                    continue
                digest, size, path = entries[0]
                url = f"{release.url.rsplit('/', 1)[0]}/{path}"
                data = read_index_file(url, workdir / f"apt-{source.name}-{component}-Packages", runner)
                if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
                    raise UserError(f"{url} does not match the sha256 {release.url} lists for it",
                                    "retry later (the mirror may be mid-update), or use another mirror")
                found += [Available(name, version, arch, source) for name, version, arch in _packages_list(data, path)]
        return found

    def compare_versions(self, left: str, right: str) -> int:
        return compare_debian(left, right)

    def tool_version(self, runner: Runner) -> str:
        # What `mmdebstrap --version` prints, read from the script where it says so plainly:
        # starting perl for it costs 0.1 s of every build that uses the cache.
        script = shutil.which("mmdebstrap")
        if script is not None:
            with contextlib.suppress(OSError):
                match = MMDEBSTRAP_VERSION.search(Path(script).read_text(errors="replace"))
                if match:
                    return f"mmdebstrap {match[1]}"
        return runner.run(["mmdebstrap", "--version"], hint="install mmdebstrap (./setup.sh)", limit=PROBE).stdout.strip()

    def install(self, request: InstallRequest, root: Path, workdir: Path, runner: Runner,
                downloads: Path | None = None) -> None:
        section: AptSection = request.section
        # As root, mmdebstrap writes the tree in place with its true owners; only its few sparse
        # files are written out, so it packs like a tree unpacked from the cache. Unprivileged,
        # its tree would be owned by subordinate ids, so it hands over a tarball (entries owned
        # 0/0), unpacked here: a write and a read of the whole tree.
        direct = runner.privilege.root
        tarball = workdir / "mmdebstrap.tar"
        argv = [
            "mmdebstrap",
            "--mode=unshare",
            f"--variant={section.variant}",
            f"--format={'directory' if direct else 'tar'}",
            f"--arch={request.arch.debian}",
            f"--components={','.join(section.components)}",
        ]
        if request.packages:
            argv.append(f"--include={','.join(request.packages)}")
        fetched = workdir / "fetched-debs"
        if downloads is not None:
            # apt reuses the .debs it finds in its archive cache (checked against the index's
            # hashes); what it fetched is copied out before mmdebstrap's final apt-get clean.
            fetched.mkdir(parents=True, exist_ok=True)
            argv += ["--skip=essential/unlink",
                     '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
                     f"--setup-hook=sync-in {shlex.quote(str(downloads))} /var/cache/apt/archives/",
                     f"--customize-hook=sync-out /var/cache/apt/archives {shlex.quote(str(fetched))}"]
        env = runner.privilege.real_user_env()  # unshare mode maps the real user's subordinate ids
        if request.source_date_epoch is not None:
            env["SOURCE_DATE_EPOCH"] = str(request.source_date_epoch)
        hint = f"check --mirror {request.mirror}, --release, the package names and the archive keyring (--keyring)"
        with contextlib.ExitStack() as cleanup:
            if section.keyring:
                keyring = cleanup.enter_context(readable_copy(Path(section.keyring)))
                argv.append(f"--keyring={keyring}")
            # Every suite as a sources line of its own: the security suite may be on another archive.
            components = " ".join(section.components)
            argv += [request.release, str(root if direct else tarball),
                     *(f"deb {source.url} {source.name} {components}" for source in request.chosen_sources)]
            if downloads is not None:
                cleanup.enter_context(downloads_lock(downloads, shared=True))
            try:
                runner.run(argv, env=env, limit=PACKAGE_MANAGER, progress=mmdebstrap_phase, hint=hint)
                if direct:
                    fill_holes_in_tree(root)
                else:
                    # mmdebstrap adds its own /dev nodes to a tarball, none to a directory: the
                    # guest's come from provisioning either way, so both give the same tree.
                    extract_tarball(tarball, root, runner, exclude=("./dev/?*",))
                if downloads is not None:
                    kept = keep_downloads(sorted(fetched.glob("*.deb")), downloads)
                    log.info("kept %d downloaded packages in %s", kept, downloads)
            finally:
                tarball.unlink(missing_ok=True)
                remove_tree(fetched)

    def package_files(self, guest: GuestRoot, runner: Runner, section: Any, names: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
        files = {}
        for name in names:
            lists = [path for path in (f"{DPKG_INFO}/{name}.list", *guest.glob(f"{DPKG_INFO}/{name}:*.list"))
                     if guest.exists(path)]
            files[name] = tuple(line for path in lists for line in guest.read_text(path).splitlines()
                                if line.startswith("/") and line != "/.")
        return files

    def installed_packages(self, guest: GuestRoot, runner: Runner, section: Any) -> tuple[Package, ...]:
        status = guest.resolve(DPKG_STATUS)
        if not status.is_file():
            return ()
        found = []
        for stanza in status.read_text(errors="replace").split("\n\n"):
            fields = dict(re.findall(r"^([\w-]+): (.*)$", stanza, re.M))
            if fields.get("Status", "").endswith(" installed") and "Package" in fields:
                found.append(Package(fields["Package"], fields.get("Version", ""), fields.get("Architecture", "")))
        return tuple(sorted(found, key=lambda p: (p.name, p.architecture)))


def _packages_list(data: bytes, path: str) -> list[tuple[str, str, str]]:
    """(name, version, architecture) of each stanza of a Packages index."""
    if path.endswith(".xz"):
        data = lzma.decompress(data)
    elif path.endswith(".gz"):
        data = gzip.decompress(data)
    found = []
    for stanza in data.decode(errors="replace").split("\n\n"):
        fields = dict(re.findall(r"^(Package|Version|Architecture): (.*)$", stanza, re.M))
        if "Package" in fields and "Version" in fields:
            found.append((fields["Package"].strip(), fields["Version"].strip(), fields.get("Architecture", "").strip()))
    return found


@contextlib.contextmanager
def readable_copy(keyring: Path) -> Iterator[Path]:
    """The keyring, copied where apt can read it: in unshare mode apt runs as an unprivileged
    subordinate uid, which cannot pass through private directories (a user's work or temporary
    directory) to the file itself. Public key material only; removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="osbuilder-keyring."))
    try:
        os.chmod(directory, 0o755)
        copy = directory / keyring.name if keyring.is_file() else directory / "keyring.d"
        if keyring.is_dir():
            shutil.copytree(keyring, copy)
            os.chmod(copy, 0o755)
        else:
            shutil.copyfile(keyring, copy)
        for path in [copy, *copy.rglob("*")] if copy.is_dir() else [copy]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        yield copy
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# mmdebstrap's stderr lines that start a phase worth telling the user about.
_PHASES = (("I: running apt-get update", "updating the package lists"),
           ("I: downloading packages", "downloading packages"), ("I: extracting archives", "extracting packages"),
           ("I: installing essential packages", "installing essential packages"),
           ("I: installing remaining packages", "installing the remaining packages"),
           ("I: cleaning package lists", "cleaning up"), ("I: creating tarball", "writing the tree"))


def mmdebstrap_phase(line: str) -> str | None:
    """The phase a line of mmdebstrap's output starts, in words, or None."""
    for prefix, words in _PHASES:
        if line.startswith(prefix):
            return words
    return None
