"""The build cache: bootstrapped base trees and downloaded packages, shared by builds.

Layout under the cache directory (default `$XDG_CACHE_HOME/osbuilder`):
  bootstrap/<distro>-<release>-<arch>-<key>/tree.tar    the installed tree, sorted, numeric owners
  bootstrap/<distro>-<release>-<arch>-<key>/entry.json  its inputs, size and sha256
  bootstrap/<distro>-<release>-<arch>-<key>/tree/       the same tree unpacked, for hard-linked clones
  bootstrap/<distro>-<release>-<arch>-<key>/tree.metadata  the sha256 of its metadata
  bootstrap/<distro>-<release>-<arch>-<key>/tree.content   the sha256 of its files' contents
  packages/<backend>/<distro>-<release>-<arch>/         the package manager's downloads
  downloads/<sha256>                                    pinned downloads (agents, payloads)
  pieces/gzip-<level>-zlib<version>/<xx>/<sha256>       compressed initrd pieces (gzip_pieces.py)
  locks/<name>.lock                                     one lock per entry
  verified/<sha256>                                     trees that passed the checks (verified.py)

An entry is written under a temporary name in `bootstrap/` and renamed into place, so a
reader sees a whole entry or none. Builds that want the same entry take its lock: the first
bootstraps, the others wait and then reuse it. A tarball whose digest no longer matches its
entry.json is removed and rebuilt. The entry.json's mtime records its last use; a piece's
own mtime records its.

The unpacked copy spares a build the unpack: a build whose tree stays in osbuilder's
staging (never handed to the user) and that runs as real root gets a hard-linked clone,
which creates only the directories (`cp -al`). The clone shares every other inode with the
cache, so provisioning never writes a file in place (GuestRoot removes a file before it
writes a new one; the tree is clamped to the epoch before it is kept, so the final clamp touches
only new files), and every packer ignores link counts from outside the tree. The copy's
metadata (names, inode numbers, modes, owners, sizes, mtimes) and the contents of its files
are hashed when it is kept and checked on every clone: a copy changed since, even a file
rewritten in place with its size and mtime kept, is dropped, and the tarball used. Only a
digest mismatch condemns an entry: a tarball that matches its digest but fails to unpack
(a full disk) is reported as the error it is, and the entry kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from osbuilder.foundation.verified import VERIFIED
from osbuilder.foundation.errors import CommandError, UserError
from osbuilder.foundation.fsutil import remove_tree, sha256_file, walk_entries, write_atomically
from osbuilder.foundation.settings import setting
from osbuilder.foundation.shared_settings import CacheDirSetting

log = logging.getLogger("osbuilder")

BOOTSTRAP = "bootstrap"
PACKAGES = "packages"
DOWNLOADS = "downloads"
PIECES = "pieces"
LOCKS = "locks"
TREE = "tree.tar"
UNPACKED = "tree"
UNPACKED_DIGEST = "tree.metadata"
UNPACKED_CONTENT = "tree.content"
ENTRY = "entry.json"
DAY_S = 86400


CACHE_ACTIONS = ("list", "clean")


def _days(text: str) -> float:
    days = float(text)
    if not days >= 0:
        raise ValueError(f"'{text}' is not a number of days (0 or more)")
    return days


@dataclass(frozen=True)
class CacheOptions(CacheDirSetting):
    action: str = setting(help="list: show the entries; clean: remove them", positional=True,
                          metavar="|".join(CACHE_ACTIONS), required=True)
    older_than: float | None = setting(None, help="clean only entries unused for this many days", metavar="DAYS",
                                       parse=_days)
    all: bool = setting(False, help="clean every entry, other jobs' included (clean asks for this or --older-than)",
                        boolean=True)


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "osbuilder"


def inputs_key(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CacheEntry:
    kind: str  # "bootstrap", "packages", "downloads" or "pieces"
    name: str
    path: Path
    size: int
    last_used: float
    inputs: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "path": str(self.path), "size": self.size,
                "last_used": int(self.last_used), "inputs": self.inputs}


def keep_downloads(found: Iterable[Path], downloads: Path) -> int:
    """Copy newly downloaded packages into the shared downloads directory, each under a
    temporary name renamed into place (other builds may be reading it). Returns how many."""
    kept = 0
    for path in found:
        final = downloads / path.name
        if final.exists() or not path.is_file():
            continue
        partial = downloads / f".{path.name}.{os.getpid()}.partial"
        try:
            shutil.copyfile(path, partial)
            os.replace(partial, final)
        finally:
            partial.unlink(missing_ok=True)
        kept += 1
    return kept


@contextlib.contextmanager
def downloads_lock(downloads: Path, shared: bool = False) -> Iterator[None]:
    """Held while a build uses a downloads directory. Shared: builds that only add whole
    files (apt's) run together. Exclusive: package managers that keep their own state there
    (dnf), and cleaning."""
    # Beside the directory, not in it: apt copies the directory into the guest.
    with open(downloads.parent / f".{downloads.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _writer_alive(partial: Path) -> bool:
    """Whether the process named in `.<entry>.<pid>.partial` still runs."""
    try:
        pid = int(partial.name.rsplit(".", 2)[-2])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove_older(directory: Path, cutoff: float) -> None:
    for path in directory.rglob("*"):
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
        except FileNotFoundError:
            pass


def _walk_tree(root: Path, regular: list[tuple[bytes, str]] | None = None) -> str:
    """The metadata digest (see metadata_digest); the regular files met on the way are
    appended to `regular` (name, path), in the same order, for the content digest."""
    digest = hashlib.sha256()
    for name, item, st in walk_entries(root):
        if stat.S_ISDIR(st.st_mode):
            record: tuple[int, ...] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)
        else:
            record = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ino, st.st_size, st.st_rdev)
            if regular is not None and stat.S_ISREG(st.st_mode):
                regular.append((name, item.path))
        digest.update(name + b"\0" + repr(record).encode() + b"\n")
    return digest.hexdigest()


def metadata_digest(root: Path) -> str:
    """sha256 of what tells a tree's content apart without reading it: every path's type,
    mode, owner, mtime, and for non-directories the inode number and size (a hard-linked
    clone shares those inodes; its directories are its own)."""
    return _walk_tree(root)


def _hash_files(paths: list[str]) -> list[bytes]:
    sums = []
    for path in paths:
        digest = hashlib.sha256()
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            while chunk := os.read(fd, 1 << 20):
                digest.update(chunk)
        finally:
            os.close(fd)
        sums.append(digest.digest())
    return sums


def tree_digests(root: Path) -> tuple[str, str]:
    """(metadata digest, content digest) in one walk: the content digest is the sha256 of
    every regular file's name and content, what the metadata cannot see (a file rewritten in
    place). Files are hashed on two threads in two runs of the list (hashlib releases the
    GIL), not one task per file: a tree has thousands of small ones."""
    regular: list[tuple[bytes, str]] = []
    metadata = _walk_tree(root, regular)
    paths = [path for _, path in regular]
    half = len(paths) // 2
    with ThreadPoolExecutor(max_workers=2) as pool:
        second = pool.submit(_hash_files, paths[half:])
        sums = _hash_files(paths[:half]) + second.result()
    content = hashlib.sha256()
    for (name, _), found in zip(regular, sums):
        content.update(name + b"\0" + found)
    return metadata, content.hexdigest()


def content_digest(root: Path) -> str:
    """The content digest of tree_digests."""
    return tree_digests(root)[1]


class BuildCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"cache directory '{root}' is not a directory", "pass --cache-dir a directory, or --no-cache")

    def _directory(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Held while one build looks up, and if need be writes, the entry `name`."""
        with open(self._directory(LOCKS) / f"{name}.lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("waiting for another build writing the cache entry %s", name)
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def downloads(self, backend: str, distro: str, release: str, arch: str) -> Path:
        """Where a package manager keeps what it downloaded, reused by every later build."""
        return self._directory(PACKAGES, backend, f"{distro}-{release}-{arch}")

    def pieces_dir(self) -> Path:
        """Where initrd packers keep compressed pieces for later builds (pack/gzip_pieces.py)."""
        return self.root / PIECES

    def bootstrap_path(self, name: str) -> Path:
        return self.root / BOOTSTRAP / name

    def unpack_tree(self, name: str, unpack: Callable[[Path], None]) -> bool:
        """`unpack(tarball)` of the cached tree, its digest checked while it runs (a thread reads
        the tarball as tar does: a rebuild does not wait for a separate pass over 150 MiB).
        False, with the entry removed, when the entry is missing, damaged, or fails to unpack;
        the caller then discards what was unpacked."""
        found = self._recorded_tree(name)
        if found is None:
            return False
        tree, digest = found
        with ThreadPoolExecutor(max_workers=1) as background:
            hashing = background.submit(sha256_file, tree)
            try:
                unpack(tree)
            except CommandError:
                if hashing.result() == digest:
                    # The tarball is what was stored: the failure is the unpack's (a full disk,
                    # an I/O error), reported as such; the entry stays for the next build.
                    log.warning("cache entry %s is whole; unpacking it failed, so it is kept", self.bootstrap_path(name))
                    raise
                return self._intact(name, False)
            if not self._intact(name, hashing.result() == digest):
                return False
        self._used(name)
        return True

    def clone_tree(self, name: str, into: Path, clone: Callable[[Path, Path], None]) -> bool:
        """`clone(unpacked, into)` from the entry's unpacked copy (hard links: only directories
        are created), its metadata checked. False when the entry keeps no copy, keeps it on
        another filesystem than `into`, or the copy changed since it was kept (it is then
        dropped); the caller discards whatever `into` holds."""
        entry = self.bootstrap_path(name)
        unpacked = entry / UNPACKED
        try:
            expected = (entry / UNPACKED_DIGEST).read_text().strip()
            if unpacked.stat().st_dev != into.parent.stat().st_dev:
                return False
        except OSError:
            return False
        try:
            expected_content = (entry / UNPACKED_CONTENT).read_text().strip()
        except OSError:  # kept before contents were recorded: it cannot be vouched for
            self._drop_unpacked(entry)
            return False
        # The clone's files are the kept copy's inodes (hard links), so their contents are read
        # through the kept copy while cp runs. Both trees' metadata digests, inode numbers
        # included, tie each name in the clone to the inode that was hashed under that name.
        with ThreadPoolExecutor(max_workers=1) as background:
            kept = background.submit(tree_digests, unpacked)
            try:
                clone(unpacked, into)
            except CommandError as exc:
                log.warning("could not clone %s (%s); unpacking its tarball instead", unpacked, exc)
                return False
            cloned = metadata_digest(into)
            try:
                found = kept.result()
            except OSError:  # a file of the kept copy went away while it was read
                found = None
            if cloned != expected or found != (expected, expected_content):
                log.warning("the unpacked copy in cache entry %s changed since it was kept; dropping it", entry)
                self._drop_unpacked(entry)
                return False
        self._used(name)
        return True

    def keep_unpacked(self, name: str, tree: Path, clone: Callable[[Path, Path], None]) -> None:
        """Keep `clone(tree, ...)` in the entry as its unpacked copy (best effort: without
        one, builds unpack the tarball). Call with the entry's lock held."""
        entry = self.bootstrap_path(name)
        if not entry.is_dir() or tree.stat().st_dev != entry.stat().st_dev:
            return
        if all((entry / f).is_file() for f in (UNPACKED_DIGEST, UNPACKED_CONTENT)) and (entry / UNPACKED).is_dir():
            return
        self._drop_unpacked(entry)  # half a copy (one without its digest, or the reverse), a dead build's leftovers
        partial = entry / f".{UNPACKED}.{os.getpid()}.partial"
        try:
            clone(tree, partial)
            digest, content = tree_digests(partial)
            os.replace(partial, entry / UNPACKED)
            write_atomically(entry / UNPACKED_CONTENT, f"{content}\n".encode())
            write_atomically(entry / UNPACKED_DIGEST, f"{digest}\n".encode())
        except (OSError, CommandError) as exc:
            log.warning("could not keep an unpacked copy of %s: %s", entry, exc)
        finally:
            if partial.exists():
                remove_tree(partial)

    def _drop_unpacked(self, entry: Path) -> None:
        (entry / UNPACKED_DIGEST).unlink(missing_ok=True)
        (entry / UNPACKED_CONTENT).unlink(missing_ok=True)
        for leftover in [entry / UNPACKED, *entry.glob(f".{UNPACKED}.*.partial")]:
            remove_tree(leftover)

    def _recorded_tree(self, name: str) -> tuple[Path, str] | None:
        """The entry's tarball and recorded digest, its size checked; a damaged entry is removed."""
        entry = self.bootstrap_path(name)
        if not entry.is_dir():
            return None
        try:
            recorded = json.loads((entry / ENTRY).read_text())
            tree = entry / TREE
            if tree.stat().st_size != recorded["size"]:
                raise ValueError("the tarball is not the recorded size")
            return tree, str(recorded["sha256"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("cache entry %s is damaged (%s); rebuilding it", entry, exc)
            shutil.rmtree(entry, ignore_errors=True)
            return None

    def _intact(self, name: str, matches: bool) -> bool:
        if not matches:
            entry = self.bootstrap_path(name)
            log.warning("cache entry %s is damaged (the tarball does not match its recorded digest); rebuilding it",
                        entry)
            shutil.rmtree(entry, ignore_errors=True)
        return matches

    def _used(self, name: str) -> None:
        os.utime(self.bootstrap_path(name) / ENTRY)  # for `cache clean --older-than`

    def store_tree(self, name: str, write_tarball: Callable[[Path], None], inputs: dict[str, Any]) -> Path:
        """Store the entry `name`: `write_tarball(path)` writes the tree's tarball inside a
        temporary entry, which is renamed into place once whole."""
        partial = self._directory(BOOTSTRAP) / f".{name}.{os.getpid()}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        try:
            write_tarball(partial / TREE)
            record = {"inputs": inputs, "size": (partial / TREE).stat().st_size,
                      "sha256": sha256_file(partial / TREE), "created": int(time.time())}
            (partial / ENTRY).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
            final = self.bootstrap_path(name)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(partial, final)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return final / TREE

    def remove_bootstrap(self, name: str) -> None:
        """Remove one bootstrap entry (a build waiting on it finds it gone and installs)."""
        with self.lock(name):
            shutil.rmtree(self.bootstrap_path(name), ignore_errors=True)

    def entries(self) -> list[CacheEntry]:
        found: list[CacheEntry] = []
        bootstrap = self.root / BOOTSTRAP
        for entry in sorted(bootstrap.iterdir()) if bootstrap.is_dir() else []:
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            record = entry / ENTRY
            try:
                inputs = json.loads(record.read_text()).get("inputs", {})
                used = record.stat().st_mtime
            except (OSError, ValueError):
                inputs, used = {}, entry.stat().st_mtime
            found.append(CacheEntry(BOOTSTRAP, entry.name, entry, _tree_size(entry), used, inputs))
        packages = self.root / PACKAGES
        for entry in sorted(packages.glob("*/*")) if packages.is_dir() else []:
            if not entry.is_dir():
                continue
            newest = max((p.stat().st_mtime for p in entry.rglob("*")), default=entry.stat().st_mtime)
            found.append(CacheEntry(PACKAGES, f"{entry.parent.name}/{entry.name}", entry, _tree_size(entry),
                                    max(newest, entry.stat().st_mtime), {}))
        downloads = self.root / DOWNLOADS
        for entry in sorted(downloads.iterdir()) if downloads.is_dir() else []:
            if entry.is_file() and not entry.name.startswith("."):
                info = entry.stat()
                found.append(CacheEntry(DOWNLOADS, entry.name, entry, info.st_size, info.st_mtime, {}))
        verified = self.root / VERIFIED
        records = [p.stat() for p in verified.iterdir()] if verified.is_dir() else []
        if records:
            found.append(CacheEntry(VERIFIED, "records", verified, sum(r.st_size for r in records),
                                    max(r.st_mtime for r in records), {}))
        pieces = self.root / PIECES
        for entry in sorted(pieces.iterdir()) if pieces.is_dir() else []:
            files = [p.stat() for p in entry.rglob("*") if p.is_file()] if entry.is_dir() else []
            found.append(CacheEntry(PIECES, entry.name, entry, sum(f.st_size for f in files),
                                    max((f.st_mtime for f in files), default=entry.stat().st_mtime), {}))
        return found

    def clean(self, older_than_days: float | None = None, now: float | None = None) -> list[CacheEntry]:
        """Remove every entry (or those unused for `older_than_days`), never one being written."""
        now = time.time() if now is None else now
        removed = []
        for entry in self.entries():
            if older_than_days is not None and now - entry.last_used < older_than_days * DAY_S:
                if entry.kind in (PIECES, VERIFIED):  # in use: its pieces (records) age one by one
                    _remove_older(entry.path, now - older_than_days * DAY_S)
                continue
            if entry.kind == DOWNLOADS:
                entry.path.unlink(missing_ok=True)  # readers copy it whole or not at all
            elif entry.kind in (PIECES, VERIFIED):  # a reader reads a piece (a record) whole or not at all
                shutil.rmtree(entry.path, ignore_errors=True)
            elif entry.kind == PACKAGES:
                with downloads_lock(entry.path):
                    shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with self.lock(entry.name):
                    shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry)
        bootstrap = self.root / BOOTSTRAP
        for leftover in bootstrap.glob(".*.partial") if bootstrap.is_dir() else []:
            if not _writer_alive(leftover):  # a build killed before it could clean up
                shutil.rmtree(leftover, ignore_errors=True)
        return removed
