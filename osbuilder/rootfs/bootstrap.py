"""Fill a staging tree with the distribution's packages, through the recipe's backend.

Unless --no-cache, the installed tree is kept as a tarball under a key made of everything
that decides its content, and reused by later builds with the same inputs; the package
manager's downloads are kept too. The cache wraps every backend the same way.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from osbuilder.foundation.cache import BOOTSTRAP, BuildCache, inputs_key
from osbuilder.foundation.fsutil import GuestRoot, clamp_mtimes, remove_tree, sha256_file
from osbuilder.rootfs.recipes import Recipe
from osbuilder.rootfs.backends import InstallRequest
from osbuilder.rootfs.backends.base import content_digest, recipe_files
from osbuilder.rootfs.binfmt import ensure_binfmt
from osbuilder.rootfs.dracut import build_with_dracut
from osbuilder.rootfs.options import DRACUT, RootfsOptions
from osbuilder.rootfs.tarball import create_tarball, extract_tarball
from osbuilder.foundation.runner import FILESYSTEM, Runner

log = logging.getLogger("osbuilder")


def install_request(options: RootfsOptions, recipe: Recipe) -> InstallRequest:
    section = recipe.backend.apply_overrides(recipe.backend_section, options.backend_overrides())
    return InstallRequest(
        distro=recipe.name,
        release=options.release,
        arch=options.target,
        # --lock: every package at its locked version, which the package manager resolves among.
        packages=tuple(recipe.backend.pin(p) for p in options.pinned) if options.pinned else
        recipe.packages_for(options.arch, options.init, options.seccomp, options.ca_certificates)
        + options.extra_packages,
        mirror=options.mirror,
        section=section,
        source_date_epoch=options.source_date_epoch,
        world=options.pinned_world,
        sources=tuple(source for source in recipe.backend.package_sources(options.release, options.mirror, section,
                                                                          options.with_updates)
                      if source.name not in options.unserved_sources),
    )


def bootstrap(options: RootfsOptions, recipe: Recipe, tree: Path, workdir: Path, runner: Runner,
              private_tree: bool = False) -> None:
    """Fill `tree`. `private_tree`: the tree stays in osbuilder's staging and is removed after
    packing, so it may share inodes with the cache's unpacked copy (see cache.py)."""
    if options.existing is not None:
        copy_existing(Path(options.existing), tree, runner)
        return
    if options.starts_empty:
        tree.mkdir(parents=True, exist_ok=True)
        return
    if options.method == DRACUT:
        tree.mkdir(parents=True, exist_ok=True)
        build_with_dracut(options.init, tree, workdir, runner, options.source_date_epoch)
        return
    backend = recipe.backend
    request = install_request(options, recipe)  # checked once, by config.make_rootfs_options (preflight)
    if backend.needs_binfmt_for_foreign_arch:
        ensure_binfmt(request.arch, runner)
    if options.cache_dir is None:  # --no-cache
        tree.mkdir(parents=True, exist_ok=True)
        backend.install(request, tree, workdir, runner)
        return
    cache = BuildCache(options.cache_dir)
    inputs = bootstrap_inputs(request, recipe, backend.tool_version(runner), options.index_digests)
    prefix = f"{request.distro}-{request.release}-{request.arch.name}-"
    name = f"{prefix}{inputs_key(inputs)}"
    # Under fakeroot the owners live in fakeroot's records of this build's inodes: unpack.
    linked = private_tree and not runner.privilege.faked

    def clone(source: Path, into: Path) -> None:
        runner.run(["cp", "--archive", "--link", "--no-target-directory", str(source), str(into)], limit=FILESYSTEM)

    # One build per entry at a time: a second build of the same tree waits, then reuses it.
    with cache.lock(name):
        if linked and cache.clone_tree(name, tree, clone):
            log.info("using cached bootstrap %s (linked)", cache.bootstrap_path(name))
            return
        remove_tree(tree)  # whatever a changed copy cloned
        unpacked = cache.unpack_tree(name, lambda tarball: extract_tarball(tarball, tree, runner))
        if unpacked:
            log.info("using cached bootstrap %s", cache.bootstrap_path(name))
        else:
            superseded = superseded_entry(cache, prefix, inputs)
            if superseded is not None:
                log.info("bootstrapping afresh: %s changed since the cached bootstrap %s was installed from them",
                         " and ".join(superseded[1]), cache.bootstrap_path(superseded[0]))
            remove_tree(tree)  # whatever a damaged entry unpacked
            tree.mkdir(parents=True, exist_ok=True)
            downloads = cache.downloads(backend.name, request.distro, request.release, request.arch.name)
            backend.install(request, tree, workdir, runner, downloads=downloads)
            # The recipe's removals depend on nothing but the recipe (part of the key): applied
            # before caching, a rebuild neither unpacks nor deletes them (a third of Debian's files).
            remove_recipe_paths(GuestRoot(tree), recipe)
        # Clamped before it is stored and kept (entries stored by earlier versions were not),
        # the tree's files are never touched by the final clamp, which must not reach through
        # a hard link into the cache's copy.
        if options.source_date_epoch is not None:
            clamp_mtimes(tree, options.source_date_epoch)
        if not unpacked:
            cache.store_tree(name, lambda tarball: create_tarball(tree, tarball, runner), inputs)
            if superseded is not None:  # the same build from older indexes: never reused again
                cache.remove_bootstrap(superseded[0])
        if linked:
            cache.keep_unpacked(name, tree, clone)


def remove_recipe_paths(guest: GuestRoot, recipe: Recipe) -> None:
    """What the recipe's [guest] remove names (documentation, files that cannot run)."""
    for pattern in recipe.remove_paths:
        guest.remove_matching(pattern)


def bootstrap_inputs(request: InstallRequest, recipe: Recipe, tool_version: str,
                     index_digests: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    """Everything that decides the bootstrapped tree: the request (release, arch, package
    set, sources, mirror, the backend's recipe table, SOURCE_DATE_EPOCH), the recipe file's and
    the keyring's contents, the package manager's version, and the digest of each source's
    package index (none for --lock, whose versions do not move with the indexes)."""
    inputs = request.identity()
    inputs["recipe_sha256"] = sha256_file(recipe.path)
    inputs["files_sha256"] = {value: content_digest(value) for value in recipe_files(request.section)}
    inputs["tool"] = tool_version
    if index_digests:
        inputs[INDEXES] = dict(index_digests)
    return inputs


INDEXES = "indexes"
EPOCH = "source_date_epoch"  # the request's field


def superseded_entry(cache: BuildCache, prefix: str, inputs: dict[str, Any]) -> tuple[str, list[str]] | None:
    """The cached bootstrap of the same build from other indexes, and the sources whose
    indexes moved since, or None: why a build that was cached installs again."""
    if INDEXES not in inputs:
        return None
    # The epoch aside too: where it comes from the indexes (dnf's, apk's), it moves with them.
    mine = json.loads(json.dumps(inputs, sort_keys=True, default=str))
    indexes = mine.pop(INDEXES)
    mine.pop(EPOCH, None)
    newest: tuple[float, str, list[str]] | None = None
    for entry in cache.entries():
        recorded = dict(entry.inputs)
        theirs = recorded.pop(INDEXES, None)
        recorded.pop(EPOCH, None)
        if entry.kind != BOOTSTRAP or not entry.name.startswith(prefix) or not isinstance(theirs, dict) \
                or recorded != mine:
            continue
        moved = [source for source, digest in indexes.items() if theirs.get(source) != digest]
        if moved and (newest is None or entry.last_used > newest[0]):
            newest = (entry.last_used, entry.name, moved)
    return (newest[1], newest[2]) if newest else None


def copy_existing(source: Path, tree: Path, runner: Runner) -> None:
    """A tree the user bootstrapped (upstream's no-bootstrap mode), copied with its owners,
    modes, links, hard links, device nodes and xattrs; the original is never changed."""
    tree.mkdir(parents=True, exist_ok=True)
    runner.run(["cp", "--archive", "--no-target-directory", f"{source}/.", str(tree)],
               hint=f"check that '{source}' is readable; copying device nodes needs root", limit=FILESYSTEM)
