"""RPM-family installs through `dnf --installroot` (CentOS Stream, Azure Linux, Fedora).

dnf runs with a generated configuration only: its own dnf.conf and repository file, no host
repositories, variables or plugins, `--forcearch` for the target, and package signatures
checked against the recipe's key (or --keyring). RPM's database path is pinned through a
private HOME's .rpmmacros, because Debian's rpm would otherwise put it under ~/.rpmdb.

As root, dnf installs straight into the tree. An ordinary user's dnf runs as root of a user
namespace holding the user's subordinate ids (rpm sets owners and runs its scriptlets in a
chroot there); the tree it wrote, owned on disk by those ids, is handed over as a tarball
(made inside the same mapping, so its entries carry the guest's owners) and deleted.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import lzma
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from osbuilder.foundation.cache import downloads_lock
from osbuilder.foundation.errors import UserError
from osbuilder.foundation.fsutil import GuestRoot
from osbuilder.rootfs.backends.base import (RELEASE, UPDATES, Available, Backend, IndexState, InstallRequest, Package,
                                            PackageSource, check_keyring,
                                            install_through_user_namespace, read_index_file, recipe_path)
from osbuilder.foundation.privilege import Privilege
from osbuilder.foundation.runner import PACKAGE_MANAGER, PROBE, Runner
from osbuilder.rootfs.backends.versions import compare_rpm

QUERY_FORMAT = r"%{NAME}\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\t%{ARCH}\n"


@dataclass(frozen=True)
class DnfSection:
    # Base URLs: {mirror} is the recipe's mirror (or --mirror); dnf expands $releasever and $basearch.
    repositories: tuple[str, ...] = ("{mirror}",)
    # Repositories of the release's updates, beside those unless --no-updates (where the
    # distribution splits them off: Fedora; CentOS Stream and Azure Linux update in place).
    updates: tuple[str, ...] = ()
    # "release=releasever" pairs where the release's name is not dnf's $releasever (stream9=9).
    releasevers: tuple[str, ...] = ()
    # The packages' signing key: a file (relative to the recipe) or a URL dnf fetches.
    keyring: str = recipe_path()
    # Whether repomd.xml itself is signed (most distributions sign only the packages).
    repo_gpgcheck: bool = False
    dbpath: str = "/var/lib/rpm"


class DnfBackend(Backend):
    name = "dnf"
    purl_type = "rpm"
    Section = DnfSection

    def preflight(self, request: InstallRequest, privilege: Privilege) -> None:
        section: DnfSection = request.section
        if not section.keyring:
            raise UserError(f"the {request.distro} recipe names no package signing key",
                            "pass --keyring the distribution's RPM-GPG-KEY file")
        check_keyring(section.keyring, f"pass --keyring the {request.distro} RPM-GPG-KEY file")
        privilege.require_user_namespace(f"installing {request.distro} with dnf", "rpm sets the guest files' owners")

    missing_pin_patterns = (r"No match for argument: (?P<name>\S+)", r"Unable to find a match: (?P<name>\S+)")

    def pin(self, package: Package) -> str:
        return f"{package.name}-{package.version}.{package.architecture}"  # dnf's NEVRA

    def package_sources(self, release: str, mirror: str, section: Any, updates: bool) -> tuple[PackageSource, ...]:
        def expanded(url: str) -> str:
            return url.replace("{mirror}", mirror.rstrip("/")).replace("$releasever", self._releasever(section, release))

        sources = [PackageSource(expanded(url), expanded(url), RELEASE) for url in section.repositories]
        if updates:
            sources += [PackageSource(expanded(url), expanded(url), UPDATES) for url in section.updates]
        return tuple(dict.fromkeys(sources))

    def _repomd(self, request: InstallRequest, workdir: Path, runner: Runner) -> list[tuple[PackageSource, str, bytes]]:
        found = []
        for index, source in enumerate(request.chosen_sources):
            url = source.url.replace("$basearch", request.arch.rpm).rstrip("/")
            found.append((source, url, read_index_file(f"{url}/repodata/repomd.xml", workdir / f"repomd-{index}.xml",
                                                       runner)))
        return found

    def read_indexes(self, request: InstallRequest, workdir: Path, runner: Runner) -> IndexState:
        """The newest <timestamp> of the repositories' repomd.xml (when their metadata last
        changed) and each repository's digest: its primary index's checksum, as repomd names it."""
        newest = None
        digests = []
        for source, _, text in self._repomd(request, workdir, runner):
            stamps = [int(found) for found in re.findall(rb"<timestamp>\s*(\d+)\s*</timestamp>", text)]
            if stamps:
                newest = max(stamps + ([newest] if newest is not None else []))
            primary = _primary_entry(text)
            digests.append((source.name, primary[1] if primary else hashlib.sha256(text).hexdigest()))
        return IndexState(newest, tuple(digests))

    def index_epoch(self, request: InstallRequest, workdir: Path, runner: Runner) -> int | None:
        return self.read_indexes(request, workdir, runner).epoch

    def base_urls(self, request: InstallRequest) -> list[str]:
        """The repositories' URLs with dnf's variables expanded, as dnf will fetch them."""
        return [source.url.replace("$basearch", request.arch.rpm).rstrip("/") for source in request.chosen_sources]

    def available_versions(self, request: InstallRequest, workdir: Path, runner: Runner) -> list[Available]:
        found: list[Available] = []
        for index, (source, url, text) in enumerate(self._repomd(request, workdir, runner)):
            primary = _primary_entry(text)
            if primary is None:
                raise UserError(f"{url}/repodata/repomd.xml names no primary index", "check --mirror and --release")
            location = f"{url}/{primary[0]}"
            data = read_index_file(location, workdir / f"primary-{index}{Path(primary[0]).suffix}", runner)
            xml = _decompress(data, location, workdir / f"primary-{index}", runner)
            found += [Available(name, version, arch, source) for name, version, arch in _primary_packages(xml, location)]
        return found

    def compare_versions(self, left: str, right: str) -> int:
        return compare_rpm(left, right)

    def releasever(self, request: InstallRequest) -> str:
        return self._releasever(request.section, request.release)

    @staticmethod
    def _releasever(section: Any, release: str) -> str:
        pairs = dict(pair.partition("=")[::2] for pair in section.releasevers)
        return pairs.get(release, release)

    def tool_version(self, runner: Runner) -> str:
        # As the real user: under fakeroot dnf believes it is root and opens /var/log for its log.
        out = runner.run(["dnf", "--version"], env=runner.privilege.real_user_env(), hint="install dnf (./setup.sh)", limit=PROBE).stdout
        return "dnf " + (out.splitlines() or ["unknown"])[0].strip()

    def install(self, request: InstallRequest, root: Path, workdir: Path, runner: Runner,
                downloads: Path | None = None) -> None:
        section: DnfSection = request.section
        config = workdir / "dnf"
        (config / "repos.d").mkdir(parents=True, exist_ok=True)
        (config / "home").mkdir(exist_ok=True)
        keyring = section.keyring if "://" in section.keyring else Path(section.keyring).resolve().as_uri()
        from osbuilder.foundation.templates import Templates  # jinja2: for an install, not for listing recipes

        templates = Templates()
        (config / "dnf.conf").write_text(templates.render("dnf.conf.j2", config=config))
        (config / "repos.d" / "osbuilder.repo").write_text(templates.render(
            "dnf.repo.j2", distro=request.distro, keyring=keyring, repo_gpgcheck=section.repo_gpgcheck,
            baseurls=[source.url for source in request.chosen_sources]))
        (config / "home" / ".rpmmacros").write_text(f"%_dbpath {section.dbpath}\n")
        installroot = root if runner.privilege.root else workdir / "dnf-root"
        cachedir = downloads or config / "cache"
        argv = ["dnf", "--assumeyes", "--quiet", f"--installroot={installroot}", f"--config={config / 'dnf.conf'}",
                f"--setopt=reposdir={config / 'repos.d'}", f"--setopt=varsdir={config / 'vars'}",
                f"--setopt=cachedir={cachedir}", "--noplugins",
                f"--releasever={self.releasever(request)}", f"--forcearch={request.arch.rpm}", "install",
                *request.packages]
        if downloads is not None:
            # Packages are kept for later builds; the repositories' metadata is always fetched
            # afresh, so a kept index never names packages the mirror has dropped.
            argv[1:1] = ["--setopt=keepcache=True", "--setopt=metadata_expire=0"]
        env = {"HOME": str(config / "home"), "XDG_CONFIG_HOME": str(config / "home")}
        if request.source_date_epoch is not None:
            env["SOURCE_DATE_EPOCH"] = str(request.source_date_epoch)
        hint = f"check --mirror {request.mirror}, --release, the package names and the signing key (--keyring)"
        with downloads_lock(downloads) if downloads is not None else contextlib.nullcontext():
            if runner.privilege.root:
                runner.run(argv, env=env, limit=PACKAGE_MANAGER, hint=hint)
                self._remove_cache_trail(installroot, cachedir, section, runner)
            else:
                self._install_unprivileged(argv, installroot, cachedir, section, root, workdir,
                                           {**env, **runner.privilege.real_user_env()}, runner, hint)

    def _install_unprivileged(self, argv: list[str], installroot: Path, cachedir: Path, section: DnfSection,
                              root: Path, workdir: Path, env: dict[str, str], runner: Runner, hint: str) -> None:
        def install(into: Path) -> None:
            runner.run(runner.privilege.in_user_namespace(argv), env=env, limit=PACKAGE_MANAGER, hint=hint)
            self._remove_cache_trail(into, cachedir, section, runner)

        install_through_user_namespace(install, installroot, root, workdir / "dnf-root.tar", env, runner)

    def _remove_cache_trail(self, installroot: Path, cachedir: Path, section: DnfSection, runner: Runner) -> None:
        """dnf writes its record of expired repositories to the install root joined with
        cachedir, a host path: the host's directory names would land in every guest, and the
        staging directory's random name would make builds differ. Removed, with each directory
        of that trail no package owns, from the bottom up to the first one a package owns."""
        guest = GuestRoot(installroot)
        dbpath = self._dbpath(guest, section)
        trail = PurePosixPath("/", str(cachedir).lstrip("/"))
        for name in ("expired_repos.json", "last_makecache"):
            path = guest.resolve(str(trail / name), follow_final=False)
            if path.is_file():
                path.unlink()
        for directory in (trail, *trail.parents):
            host = guest.resolve(str(directory), follow_final=False)
            if str(directory) == "/" or not host.is_dir() or host.is_symlink() or any(host.iterdir()) \
                    or self._owned(guest, dbpath, str(directory), runner):
                break
            host.rmdir()

    def _owned(self, guest: GuestRoot, dbpath: str | None, path: str, runner: Runner) -> bool:
        """Whether an installed package owns `path`, by the guest's rpm database."""
        if dbpath is None:
            return True
        query = runner.run(["rpm", f"--root={guest.root}", f"--dbpath={dbpath}", "-qf", path], env=runner.privilege.real_user_env(),
                           check=False, hint="install rpm (./setup.sh)", limit=PROBE)
        return query.returncode == 0  # rpm -qf exits 1 for a path no package owns

    @staticmethod
    def _dbpath(guest: GuestRoot, section: DnfSection) -> str | None:
        """The recipe's rpm database path, when the guest has a database there."""
        found = guest.resolve(section.dbpath)
        return section.dbpath if found.is_dir() and any(found.iterdir()) else None

    def package_files(self, guest: GuestRoot, runner: Runner, section: Any, names: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
        dbpath = self._dbpath(guest, section)
        if dbpath is None or not names:
            return {name: () for name in names}
        out = runner.run(["rpm", f"--root={guest.root}", f"--dbpath={dbpath}", "-q",
                          "--queryformat=[%{=NAME}\t%{FILENAMES}\n]", *names], check=False,
                         hint="install rpm (./setup.sh)", limit=PROBE).stdout
        files: dict[str, list[str]] = {name: [] for name in names}
        for line in out.splitlines():
            name, _, path = line.partition("\t")
            if name in files and path.startswith("/"):
                files[name].append(path)
        return {name: tuple(paths) for name, paths in files.items()}

    def installed_packages(self, guest: GuestRoot, runner: Runner, section: Any) -> tuple[Package, ...]:
        dbpath = self._dbpath(guest, section)
        if dbpath is None:
            return ()
        out = runner.run(["rpm", f"--root={guest.root}", f"--dbpath={dbpath}", "-qa", f"--queryformat={QUERY_FORMAT}"],
                         hint="install rpm (./setup.sh)", limit=PROBE).stdout
        found = []
        for line in out.splitlines():
            name, version, arch = (line.split("\t") + ["", ""])[:3]
            if name == "gpg-pubkey":  # the imported signing key, not a package
                continue
            found.append(Package(name, version.removeprefix("0:"), arch))
        return tuple(sorted(found, key=lambda p: (p.name, p.architecture)))


def _primary_entry(repomd: bytes) -> tuple[str, str] | None:
    """The primary index's location and checksum, as repomd.xml names them."""
    try:
        root = ElementTree.fromstring(repomd)
    except ElementTree.ParseError:
        return None
    for data in root.iter():
        if data.tag.endswith("}data") and data.get("type") == "primary":
            location = next((e.get("href") for e in data if e.tag.endswith("}location")), None)
            checksum = next((e.text or "" for e in data if e.tag.endswith("}checksum")), "")
            if location:
                return location, checksum.strip()
    return None


def _decompress(data: bytes, source: str, scratch: Path, runner: Runner) -> bytes:
    try:
        if source.endswith(".gz"):
            return gzip.decompress(data)
        if source.endswith(".xz"):
            return lzma.decompress(data)
        if source.endswith(".bz2"):
            return bz2.decompress(data)
    except (OSError, EOFError, lzma.LZMAError, ValueError) as exc:
        raise UserError(f"{source} cannot be read ({exc})", "retry later, or use another mirror") from None
    if source.endswith(".zst"):
        packed, plain = scratch.with_suffix(".zst"), scratch.with_suffix(".xml")
        packed.write_bytes(data)
        runner.run(["zstd", "-d", "-q", "-f", "-o", str(plain), str(packed)], hint="install zstd (./setup.sh)",
                   limit=PROBE)
        return plain.read_bytes()
    return data


def _primary_packages(xml: bytes, source: str) -> list[tuple[str, str, str]]:
    """(name, [epoch:]version-release, arch) of each package a primary.xml lists."""
    found = []
    try:
        for _, element in ElementTree.iterparse(io.BytesIO(xml)):
            if not element.tag.endswith("}package"):
                continue
            fields = {child.tag.rsplit("}", 1)[-1]: child for child in element}
            name, arch, version = fields.get("name"), fields.get("arch"), fields.get("version")
            if name is not None and version is not None:
                epoch = version.get("epoch", "0")
                text = f"{version.get('ver')}-{version.get('rel')}"
                found.append((name.text or "", text if epoch in ("0", "") else f"{epoch}:{text}",
                              arch.text if arch is not None and arch.text else ""))
            element.clear()
    except ElementTree.ParseError as exc:
        raise UserError(f"{source} is not a primary index ({exc})", "retry later, or use another mirror") from None
    return found
