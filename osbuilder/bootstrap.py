"""Stage 1: fill a staging tree with the distribution's packages.

With a cache directory, the bootstrapped tarball is kept under a key made of everything
that decides its content, and reused by later builds with the same inputs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from osbuilder.backends import BootstrapRequest, get_backend
from osbuilder.binfmt import ensure_binfmt
from osbuilder.config import BuildConfig
from osbuilder.fsutil import remove_tree
from osbuilder.recipes import Recipe
from osbuilder.runner import Runner

log = logging.getLogger("osbuilder")


def bootstrap_request(config: BuildConfig, recipe: Recipe) -> BootstrapRequest:
    return BootstrapRequest(
        distro=recipe.name,
        release=config.release,
        arch=config.target,
        packages=recipe.packages_for(config.arch, config.init, config.seccomp) + config.extra_packages,
        mirror=config.mirror,
        components=config.components,
        source_date_epoch=config.source_date_epoch,
    )


def bootstrap(config: BuildConfig, recipe: Recipe, tree: Path, workdir: Path, runner: Runner) -> None:
    backend = get_backend(recipe.backend)
    request = bootstrap_request(config, recipe)
    if backend.needs_binfmt_for_foreign_arch:
        ensure_binfmt(request.arch, runner)
    tarball = _cached_tarball(config.cache_dir, backend.name, request)
    if tarball is None or not tarball.exists():
        target = tarball or workdir / "bootstrap.tar"
        partial = target.with_name(f".{target.stem}.{os.getpid()}.partial.tar")
        try:
            backend.bootstrap_tarball(request, partial, runner)
            os.replace(partial, target)
        finally:
            remove_tree(partial)
        tarball = target
    else:
        log.info("using cached bootstrap %s", tarball)
    tree.mkdir(parents=True, exist_ok=True)
    runner.run(["tar", "--extract", "--file", str(tarball), "--directory", str(tree),
                "--numeric-owner", "--same-owner", "--preserve-permissions",
                "--xattrs", "--xattrs-include=*"])


def _cached_tarball(cache_dir: Path | None, backend: str, request: BootstrapRequest) -> Path | None:
    if cache_dir is None:
        return None
    directory = Path(cache_dir) / "bootstrap"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{request.distro}-{request.release}-{request.arch.name}-{request.cache_key(backend)}.tar"
