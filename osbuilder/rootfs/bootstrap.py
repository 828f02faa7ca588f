"""Fill a staging tree with the distribution's packages, through the recipe's backend.

With a cache directory, the installed tree is kept as a tarball under a key made of
everything that decides its content, and reused by later builds with the same inputs.
The cache wraps every backend the same way.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from osbuilder.fsutil import remove_tree
from osbuilder.recipes import Recipe
from osbuilder.rootfs.backends import InstallRequest
from osbuilder.rootfs.binfmt import ensure_binfmt
from osbuilder.rootfs.dracut import build_with_dracut
from osbuilder.rootfs.options import DRACUT, RootfsOptions
from osbuilder.rootfs.tarball import create_tarball, extract_tarball
from osbuilder.runner import Runner

log = logging.getLogger("osbuilder")


def install_request(options: RootfsOptions, recipe: Recipe) -> InstallRequest:
    return InstallRequest(
        distro=recipe.name,
        release=options.release,
        arch=options.target,
        packages=recipe.packages_for(options.arch, options.init, options.seccomp) + options.extra_packages,
        mirror=options.mirror,
        section=recipe.backend.apply_overrides(recipe.backend_section, options.backend_overrides()),
        source_date_epoch=options.source_date_epoch,
    )


def bootstrap(options: RootfsOptions, recipe: Recipe, tree: Path, workdir: Path, runner: Runner) -> None:
    if options.existing is not None:
        copy_existing(Path(options.existing), tree, runner)
        return
    if options.method == DRACUT:
        tree.mkdir(parents=True, exist_ok=True)
        build_with_dracut(options.init, tree, workdir, runner, options.source_date_epoch)
        return
    backend = recipe.backend
    request = install_request(options, recipe)
    backend.preflight(request)
    if backend.needs_binfmt_for_foreign_arch:
        ensure_binfmt(request.arch, runner)
    cached = _cached_tarball(options.cache_dir, backend.name, request)
    if cached is not None and cached.exists():
        log.info("using cached bootstrap %s", cached)
        extract_tarball(cached, tree, runner)
        return
    tree.mkdir(parents=True, exist_ok=True)
    backend.install(request, tree, workdir, runner)
    if cached is not None:
        partial = cached.with_name(f".{cached.stem}.{os.getpid()}.partial.tar")
        try:
            create_tarball(tree, partial, runner)
            os.replace(partial, cached)
        finally:
            remove_tree(partial)


def _cached_tarball(cache_dir: Path | None, backend: str, request: InstallRequest) -> Path | None:
    if cache_dir is None:
        return None
    directory = Path(cache_dir) / "bootstrap"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{request.distro}-{request.release}-{request.arch.name}-{request.cache_key(backend)}.tar"


def copy_existing(source: Path, tree: Path, runner: Runner) -> None:
    """A tree the user bootstrapped (upstream's no-bootstrap mode), copied with its owners,
    modes, links, hard links, device nodes and xattrs; the original is never changed."""
    tree.mkdir(parents=True, exist_ok=True)
    runner.run(["cp", "--archive", "--no-target-directory", f"{source}/.", str(tree)],
               hint=f"check that '{source}' is readable; copying device nodes needs root")
