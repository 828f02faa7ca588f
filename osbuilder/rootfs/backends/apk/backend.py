"""Alpine installs in Python: apk's tools are not in Debian, so osbuilder reads the signed
APKINDEX, resolves dependencies, verifies each package (signature, index checksum, data hash,
every file's SHA-1), unpacks it through GuestRoot, runs its scripts inside the guest, and
writes apk's database so the guest's own apk can manage the tree later.

Every package is downloaded and verified before the first is unpacked, so a bad one leaves
nothing behind in the tree.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import pickle
import stat
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osbuilder.foundation.errors import CommandError, UserError
from osbuilder.foundation.cache import keep_downloads
from osbuilder.foundation.fetch import fetch
from osbuilder.foundation.fsutil import GuestRoot, set_owner_and_time
from osbuilder.rootfs.backends.apk.database import (InstalledFile, InstalledPackage, installed_files, read_installed,
                                                   write_database)
from osbuilder.rootfs.backends.apk.index import IndexEntry, PkgInfo, parse_apkindex
from osbuilder.rootfs.backends.apk.resolve import Resolver
from osbuilder.rootfs.backends.apk.segments import TrustedKeys, gzip_streams, tar_members
from osbuilder.rootfs.backends.apk.version import Atom, Version
from osbuilder.rootfs.backends.base import (RELEASE, Available, Backend, IndexState, InstallRequest, Package,
                                            PackageSource, check_keyring,
                                            install_through_user_namespace, read_index_file, recipe_path)
from osbuilder.rootfs.extract import check_member, guest_name
from osbuilder.foundation.privilege import Privilege
from osbuilder.foundation.runner import PACKAGE_MANAGER, Runner

log = logging.getLogger("osbuilder")

CHECKSUM_HEADER = "APK-TOOLS.checksum.SHA1"
SCRIPT_NAMES = (".pre-install", ".post-install")
SCRIPT_PATH = "/lib/apk/exec"


@dataclass(frozen=True)
class InstallJob:
    """What an unprivileged build hands the installer it runs in a user namespace."""

    request: InstallRequest
    downloads: Path | None
    log_levels: dict[str, int]  # the build's, by logger name


@dataclass(frozen=True)
class ApkSection:
    # Repository URLs: {mirror} is the recipe's mirror (or --mirror), {release} the release.
    repositories: tuple[str, ...] = ("{mirror}",)
    # The trusted signing keys: a .rsa.pub file or a directory of them (relative to the recipe).
    keyring: str = recipe_path()


def q1(data: bytes) -> str:
    return "Q1" + base64.b64encode(hashlib.sha1(data).digest()).decode()


@dataclass(frozen=True)
class VerifiedPackage:
    entry: IndexEntry
    pkginfo: PkgInfo
    scripts: dict[str, bytes]
    members: list[tuple[tarfile.TarInfo, bytes | None]]  # the data segment, every file's SHA-1 checked


class ApkBackend(Backend):
    name = "apk"
    purl_type = "apk"
    Section = ApkSection

    def preflight(self, request: InstallRequest, privilege: Privilege) -> None:
        keyring = request.section.keyring
        if not keyring:
            raise UserError(f"the {request.distro} recipe names no signing keys", "pass --keyring a .rsa.pub key")
        check_keyring(keyring, "pass --keyring an .rsa.pub key or a directory of them")
        if not TrustedKeys.load(Path(keyring)).keys:
            raise UserError(f"keyring '{keyring}' holds no .rsa.pub keys", "pass --keyring an .rsa.pub key")
        privilege.require_user_namespace(f"installing {request.distro}", "the packages set their files' owners")

    @staticmethod
    def repositories(request: InstallRequest) -> list[str]:
        return [source.url for source in request.chosen_sources] if request.sources else \
            ApkBackend.repositories_of(request.release, request.mirror, request.section)

    @staticmethod
    def repositories_of(release: str, mirror: str, section: Any) -> list[str]:
        return [url.replace("{mirror}", mirror.rstrip("/")).replace("{release}", release)
                for url in section.repositories]

    def install(self, request: InstallRequest, root: Path, workdir: Path, runner: Runner,
                downloads: Path | None = None) -> None:
        if not runner.privilege.root:
            self._install_unprivileged(request, root, workdir, runner, downloads)
            return
        keys = TrustedKeys.load(Path(request.section.keyring))
        scratch = workdir / "apk"
        scratch.mkdir(parents=True, exist_ok=True)
        repositories = self.repositories(request)
        entries = [entry for repository in repositories
                   for entry in self._index(repository, request, keys, scratch, runner)]
        world = [Atom.parse(name) for name in request.packages]
        order = Resolver(entries).resolve(world)
        log.info("apk: installing %d packages: %s", len(order), " ".join(e.name for e in order))
        verified = [self._package(entry, request, keys, scratch, runner, downloads) for entry in order]
        guest = GuestRoot(root)
        owners: dict[str, str] = {}
        installed = [self._unpack(package, guest, owners, request, runner) for package in verified]
        used_keys = {name: path.read_bytes() for name, path in keys.keys.items()}
        write_database(guest, installed, list(request.world) or [atom.name for atom in world], repositories, request.arch.apk, used_keys,
                       request.source_date_epoch or 0)

    def _install_unprivileged(self, request: InstallRequest, root: Path, workdir: Path, runner: Runner,
                              downloads: Path | None) -> None:
        """This installer, run by `python -m osbuilder.rootfs.backends.apk` as root of a user
        namespace (install_through_user_namespace): there its scripts may delete and
        replace files that fakeroot never recorded. A refusal it reports comes back as the
        same one-line error."""
        job, refusal = workdir / "apk-job.pickle", workdir / "apk-refusal.json"
        levels = {name: logging.getLogger(name).getEffectiveLevel() for name in ("osbuilder", runner.log.name)}
        job.write_bytes(pickle.dumps(InstallJob(request, downloads, levels)))
        env = runner.privilege.real_user_env()

        def install(into: Path) -> None:
            argv = [sys.executable, "-m", "osbuilder.rootfs.backends.apk", str(job), str(into), str(workdir),
                    str(refusal)]
            try:
                result = runner.run(runner.privilege.in_user_namespace(argv), env=env, limit=PACKAGE_MANAGER,
                                    hint="the apk installer failed in its user namespace")
            except CommandError:
                if refusal.exists():
                    raise UserError(**json.loads(refusal.read_text())) from None
                raise
            if not runner.log.isEnabledFor(logging.DEBUG):  # else the runner showed it as it ran
                for line in result.stderr_tail.splitlines():  # what it logged (the last lines), as if here
                    log.info("%s", line.removeprefix("osbuilder: "))

        install_through_user_namespace(install, workdir / "apk-root", root, workdir / "apk-root.tar", env, runner)

    missing_pin_patterns = (r"nothing satisfies '(?P<name>[^'=]+)=(?P<version>[^']+)'",)

    def package_sources(self, release: str, mirror: str, section: Any, updates: bool) -> tuple[PackageSource, ...]:
        # A release branch carries its fixes itself: there is no update repository to add.
        return tuple(PackageSource(url, url, RELEASE) for url in self.repositories_of(release, mirror, section))

    def _unverified_index(self, repository: str, request: InstallRequest, workdir: Path, runner: Runner,
                          index: int) -> tuple[str, bytes]:
        url = f"{repository}/{request.arch.apk}/APKINDEX.tar.gz"
        data = read_index_file(url, workdir / f"APKINDEX-date.{index}.tar.gz", runner)
        members = {m.name: body for stream in gzip_streams(data, url)[1:] for m, body in tar_members(stream.data, url)}
        if members.get("APKINDEX") is None:
            raise UserError(f"{url} holds no APKINDEX", "check --mirror and --release")
        return url, members["APKINDEX"]

    def read_indexes(self, request: InstallRequest, workdir: Path, runner: Runner) -> IndexState:
        """The newest build time (t:) of the packages the repositories' APKINDEX lists; each
        repository's digest is its APKINDEX's (not the signed archive's, which a re-signing
        changes)."""
        newest = None
        digests = []
        for index, source in enumerate(request.chosen_sources):
            url, text = self._unverified_index(source.url, request, workdir, runner, index)
            times = [int(entry.get("t")) for entry in parse_apkindex(text.decode(errors="replace"), source.url, url)
                     if entry.get("t").isdigit()]
            if times:
                newest = max(times + ([newest] if newest is not None else []))
            digests.append((source.name, hashlib.sha256(text).hexdigest()))
        return IndexState(newest, tuple(digests))

    def index_epoch(self, request: InstallRequest, workdir: Path, runner: Runner) -> int | None:
        return self.read_indexes(request, workdir, runner).epoch

    def available_versions(self, request: InstallRequest, workdir: Path, runner: Runner) -> list[Available]:
        found = []
        for index, source in enumerate(request.chosen_sources):
            url, text = self._unverified_index(source.url, request, workdir, runner, index)
            found += [Available(entry.name, entry.version, entry.get("A"), source)
                      for entry in parse_apkindex(text.decode(errors="replace"), source.url, url)]
        return found

    def compare_versions(self, left: str, right: str) -> int:
        a, b = Version(left), Version(right)
        return (a > b) - (a < b)

    def _index(self, repository: str, request: InstallRequest, keys: TrustedKeys, scratch: Path,
               runner: Runner) -> list[IndexEntry]:
        url = f"{repository}/{request.arch.apk}/APKINDEX.tar.gz"
        path = fetch(url, None, scratch / f"APKINDEX.{len(list(scratch.glob('APKINDEX.*')))}.tar.gz",
                     progress=runner.progress, signed=True)
        streams = gzip_streams(path.read_bytes(), url)
        if len(streams) < 2:
            raise UserError(f"{url} is not signed", "use a signed repository; nothing was installed")
        keys.verify(streams[0], streams[1], url, scratch, runner)
        members = {m.name: body for stream in streams[1:] for m, body in tar_members(stream.data, url)}
        if members.get("APKINDEX") is None:
            raise UserError(f"{url} holds no APKINDEX", "check --mirror and --release")
        return parse_apkindex(members["APKINDEX"].decode(errors="replace"), repository, url)

    def _package(self, entry: IndexEntry, request: InstallRequest, keys: TrustedKeys, scratch: Path,
                 runner: Runner, downloads: Path | None) -> VerifiedPackage:
        url = f"{entry.repository}/{request.arch.apk}/{entry.file_name}"
        kept = downloads / entry.file_name if downloads is not None else None
        if kept is not None and kept.is_file():
            try:
                return self._verify(kept, entry, keys, scratch, runner)
            except UserError as exc:  # a kept copy the index no longer vouches for: fetch it again
                log.info("apk: not reusing %s (%s)", kept, exc.message)
                kept.unlink(missing_ok=True)
        path = fetch(url, None, scratch / entry.file_name, progress=runner.progress, signed=True)
        package = self._verify(path, entry, keys, scratch, runner)
        if downloads is not None:
            keep_downloads([path], downloads)
        return package

    def _verify(self, path: Path, entry: IndexEntry, keys: TrustedKeys, scratch: Path,
                runner: Runner) -> VerifiedPackage:
        streams = gzip_streams(path.read_bytes(), entry.file_name)
        if len(streams) != 3:
            raise UserError(f"{entry.file_name} has {len(streams)} segments, not signature, control and data",
                            "check the repository; nothing was installed")
        signature, control, data = streams
        keys.verify(signature, control, entry.file_name, scratch, runner)
        if q1(control.compressed) != entry.checksum:
            raise UserError(f"{entry.file_name} does not match the checksum its APKINDEX records",
                            "the package was altered or the index is stale; nothing was installed")
        members = {m.name: body for m, body in tar_members(control.data, entry.file_name) if body is not None}
        pkginfo = PkgInfo.parse((members.get(".PKGINFO") or b"").decode(errors="replace"))
        if (pkginfo.first("pkgname"), pkginfo.first("pkgver")) != (entry.name, entry.version):
            raise UserError(f"{entry.file_name} says it is {pkginfo.first('pkgname')}-{pkginfo.first('pkgver')}",
                            "check the repository; nothing was installed")
        if hashlib.sha256(data.compressed).hexdigest() != pkginfo.first("datahash"):
            raise UserError(f"{entry.file_name}: its data does not match the datahash its signed .PKGINFO records",
                            "the package was altered; nothing was installed")
        scripts = {name: body for name, body in members.items() if name in SCRIPT_NAMES and body is not None}
        files = tar_members(data.data, entry.file_name)
        archive = Path(entry.file_name)
        for member, body in files:
            name = guest_name(archive, member.name)
            if name is not None:
                check_member(archive, member, name, allow_devices=True)
            if member.isreg():
                checksum = member.pax_headers.get(CHECKSUM_HEADER, "")
                if not checksum or hashlib.sha1(body or b"").hexdigest() != checksum:
                    raise UserError(f"{entry.file_name}: '{member.name}' does not match its SHA-1",
                                    "the package was altered; nothing was installed")
        return VerifiedPackage(entry, pkginfo, scripts, files)

    def _unpack(self, package: VerifiedPackage, guest: GuestRoot, owners: dict[str, str], request: InstallRequest,
                runner: Runner) -> InstalledPackage:
        entry = package.entry
        record = InstalledPackage(entry, replaces=package.pkginfo.all("replaces"), scripts=package.scripts)
        archive = Path(entry.file_name)
        self._script(package, ".pre-install", guest, request, runner)
        chown = runner.privilege.sets_owners
        for member, body in package.members:
            name = guest_name(archive, member.name)
            if name is None or member.name.startswith(".SIGN.") or member.name == ".PKGINFO":
                continue
            relative = name.lstrip("/")
            mode = member.mode & 0o7777
            if member.isdir():
                path = guest.mkdir(name, mode)
                os.chmod(path, mode)
                record.directories[relative] = (member.uid, member.gid, mode)
            else:
                self._claim(relative, entry.name, package.pkginfo, owners)
                checksum = member.pax_headers.get(CHECKSUM_HEADER, "")
                if member.isreg():
                    path = guest.write_bytes(name, body or b"", mode)
                elif member.issym():
                    path = guest.symlink(name, member.linkname)
                elif member.islnk():
                    path = guest.hardlink(name, guest_name(archive, member.linkname) or "/")
                else:
                    path = guest.make_special(name, _special_kind(member) | mode,
                                              os.makedev(member.devmajor, member.devminor))
                record.files.append(InstalledFile(
                    relative, (member.uid, member.gid, mode),
                    "Q1" + base64.b64encode(bytes.fromhex(checksum)).decode() if checksum else ""))
            set_owner_and_time(path, member.uid, member.gid, mode, member.mtime, chown)
        self._script(package, ".post-install", guest, request, runner)
        return record

    @staticmethod
    def _claim(path: str, package: str, pkginfo: PkgInfo, owners: dict[str, str]) -> None:
        owner = owners.get(path)
        if owner is not None and owner != package and owner not in pkginfo.all("replaces"):
            raise UserError(f"apk: {package} and {owner} both install /{path}",
                            "drop one of them from the package list")
        owners[path] = package

    @staticmethod
    def _script(package: VerifiedPackage, kind: str, guest: GuestRoot, request: InstallRequest,
                runner: Runner) -> None:
        body = package.scripts.get(kind)
        if body is None:
            return
        entry = package.entry
        script = f"{SCRIPT_PATH}/{entry.name}-{entry.version}{kind}"
        guest.write_bytes(script, body, 0o755)
        try:
            # As root (an unprivileged build's is root of its user namespace: see install).
            runner.run(["chroot", str(guest.root), script, entry.version], limit=PACKAGE_MANAGER,
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                       hint=f"{entry.name}'s {kind.lstrip('.')} script failed inside the guest")
        finally:
            guest.remove(script)

    def package_files(self, guest: GuestRoot, runner: Runner, section: Any, names: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
        return {name: installed_files(guest, name) for name in names}

    def installed_packages(self, guest: GuestRoot, runner: Runner, section: Any) -> tuple[Package, ...]:
        found = [Package(fields["P"], fields.get("V", ""), fields.get("A", "")) for fields in read_installed(guest)]
        return tuple(sorted(found, key=lambda p: (p.name, p.architecture)))


def _special_kind(member: tarfile.TarInfo) -> int:
    if member.ischr():
        return stat.S_IFCHR
    if member.isblk():
        return stat.S_IFBLK
    return stat.S_IFIFO
