"""The epoch of a build given none: derived from its inputs, never from the clock, so two
builds of the same inputs give the same bytes with no flag (reference-builds practice).

--source-date-epoch N, then SOURCE_DATE_EPOCH, win. Otherwise:
- a tree installed from a recipe takes the newest time its repositories' indexes record
  (apt's Release Date:, dnf's repomd.xml timestamps, the newest package in an APKINDEX),
  read before installing, since the package manager itself needs it;
- a tree of yours (--existing) takes its newest modification time;
- a tree dracut makes from this host takes the time of the host's package database;
- an extension that starts empty takes the newest time its payloads' members and its
  overlay's files record.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tarfile
from pathlib import Path

from osbuilder.foundation.documents import DAMAGED_ARCHIVE
from osbuilder.foundation.errors import UserError
from osbuilder.foundation.runner import Runner
from osbuilder.read.tarballs import plain_tarball
from osbuilder.rootfs.options import DRACUT, RootfsOptions
from osbuilder.rootfs.payloads import TARBALL_PAYLOADS
from osbuilder.rootfs.recipes import Recipe

log = logging.getLogger("osbuilder")

# Where a host keeps the record of what it installed: its newest change is the host's state.
HOST_PACKAGE_DATABASES = ("/var/lib/dpkg/status", "/var/lib/rpm/rpmdb.sqlite", "/var/lib/rpm/Packages",
                          "/usr/lib/sysimage/rpm/rpmdb.sqlite", "/lib/apk/db/installed")


def _settled(options: RootfsOptions, epoch: int | None, source: str) -> RootfsOptions:
    if epoch is None:
        log.warning("warning: %s records no time; timestamps are clamped to 0 (pass --source-date-epoch N to "
                    "choose)", source)
        epoch = 0
    else:
        log.info("source date epoch %d, from %s (pass --source-date-epoch to choose another)", epoch, source)
    return dataclasses.replace(options, source_date_epoch=epoch)


def read_indexes_before_bootstrap(options: RootfsOptions, recipe: Recipe, workdir: Path,
                                  runner: Runner) -> RootfsOptions:
    """A tree installed from the recipe: its epoch comes from the sources' indexes, read before
    installing, and so do the digests the bootstrap cache key takes (not for --lock: the lock
    names every version, whatever the indexes say since) and the sources that publish nothing
    for the arch, which the install leaves out."""
    if not options.installs_packages:
        return options
    wants_epoch = options.source_date_epoch is None
    wants_digests = options.cache_dir is not None and not options.pinned
    from osbuilder.rootfs.bootstrap import install_request

    # Read whatever the epoch and the cache need: the sources are checked for the arch either way.
    scratch = workdir / "index-dates"
    scratch.mkdir(parents=True, exist_ok=True)
    state = recipe.backend.read_indexes(install_request(options, recipe), scratch, runner)
    options = dataclasses.replace(options, index_digests=state.digests if wants_digests else (),
                                  unserved_sources=state.unserved)
    if not wants_epoch:
        return options
    return _settled(options, state.epoch, "the package index's date" if state.epoch is not None else "the package index")


def epoch_after_bootstrap(options: RootfsOptions, tree: Path, workdir: Path, runner: Runner) -> RootfsOptions:
    """Any other tree, once bootstrapped: what it (or what goes into it) records."""
    if options.source_date_epoch is not None:
        return options
    if options.method == DRACUT:
        times = [os.lstat(p).st_mtime for p in HOST_PACKAGE_DATABASES if os.path.lexists(p)]
        return _settled(options, int(max(times)) if times else None, "this host's package database")
    if options.starts_empty:
        return _settled(options, _payload_epoch(options, workdir, runner), "the extension's payloads")
    return _settled(options, _newest_mtime(tree), f"the tree {options.existing}")


def _newest_mtime(root: Path) -> int | None:
    newest = None
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            when = int(os.lstat(os.path.join(directory, name)).st_mtime)
            newest = when if newest is None else max(newest, when)
    return newest


def _payload_epoch(options: RootfsOptions, workdir: Path, runner: Runner) -> int | None:
    times = []
    for kind in TARBALL_PAYLOADS:
        path = getattr(options, kind.setting)
        if path is None:
            continue
        plain = plain_tarball(Path(path), workdir, runner)
        try:
            with tarfile.open(plain, "r|*") as archive:  # a stream: only the headers are read
                times += [int(member.mtime) for member in archive]
        except (*DAMAGED_ARCHIVE, OSError) as exc:
            raise UserError(f"{kind.flag} '{path}' cannot be read ({exc})", f"pass {kind.flag} a tarball") from None
        finally:
            if plain != Path(path):
                plain.unlink(missing_ok=True)
    if options.overlay is not None:
        found = _newest_mtime(Path(options.overlay))
        times += [found] if found is not None else []
    return max(times) if times else None
