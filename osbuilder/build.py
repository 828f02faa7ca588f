"""`osbuilder build`: the whole pipeline, rootfs then each requested artifact, into DIR."""

from __future__ import annotations

import dataclasses
import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from osbuilder.foundation.cache import BuildCache
from osbuilder.config import BuildConfig
from osbuilder.pack.artifact import Artifact
from osbuilder.pack.base import PackContext
from osbuilder.pack.guest_tree import GuestTree, open_guest_tree
from osbuilder.pack.gzip_pieces import PieceStore
from osbuilder.pack.manifest import MANIFEST_NAME, write_manifest
from osbuilder.pack.registry import PACKERS
from osbuilder.rootfs.recipes import Recipe
from osbuilder.read.kind import recognise_artifact
from osbuilder.release.layout import (ReleaseOptions, arrange_kata_layout, runtime_name, write_release_tarballs,
                               write_sha256sums)
from osbuilder.read.base_tree import base_view
from osbuilder.rootfs.stage import build_rootfs_into, check_built_tree, precheck_inputs, resolve_agent
from osbuilder.rootfs.summary import Summary
from osbuilder.foundation.runner import Runner
from osbuilder.host.runtime_fragment import (FRAGMENT_NAME, ExtensionEntry, FragmentOptions, SlotArtifact, choose,
                                             extension_entries, fragment_for, render_extension_fragment)
from osbuilder.rootfs.initmode import get_init_mode
from osbuilder.rootfs.bootstrap import install_request
from osbuilder.rootfs.lock import LOCK_NAME, lock_of
from osbuilder.release.provenance import PROVENANCE_NAME, ProvenanceInput, write_provenance
from osbuilder.release.sbom import SbomInput, write_sbom
from osbuilder.foundation.fsutil import remove_tree
from osbuilder.foundation.side_by_side import side_by_side
from osbuilder.foundation.staging import Staging, check_output_dir
from osbuilder.foundation.steps import step
from osbuilder.foundation.templates import Templates
from osbuilder.foundation.tools import HostTools


@dataclass(frozen=True)
class BuildResult:
    output: Path
    summary: Summary
    artifacts: list[Artifact]
    provenance_sha256: str | None = None  # the statement's digest, to sign (--provenance)


def planned_runtime_artifact(config: BuildConfig, recipe: Recipe) -> Path | None:
    """Where a build of `config` will put the artifact a runtime names (what write_runtime_fragment
    chooses), known before it runs; None when it packs neither an image nor an initrd."""
    slotted = [PACKERS[name] for name in config.formats if PACKERS[name].runtime_slot is not None]
    if not slotted:
        return None
    packer = min(slotted, key=lambda p: p.runtime_slot.preference)  # type: ignore[union-attr]
    release = config.release
    if release.layout != "kata":
        return config.output.output / packer.default_file_name
    link = packer.release.link_name(release.variant)
    name = link or packer.release.file_name(recipe.name, config.rootfs.release, release.variant)
    return config.output.output / release.share / name


def write_runtime_fragment(artifacts: list[Artifact], options: FragmentOptions, directory: Path,
                           release: ReleaseOptions, extension: str | None = None,
                           extensions: list[ExtensionEntry] | None = None) -> Path | None:
    """kata-runtime.toml for the artifact a runtime boots, by the name the runtime uses, made
    from the artifacts as they read back (with their sidecars beside them), as `inspect
    --runtime-config-fragment` would make it; with the base's extensions. An extension
    build (`extension`, its name) writes only its guest_extension_images table."""
    candidates = [SlotArtifact(recognise_artifact(a.path), runtime_name(a, release)) for a in artifacts]
    if extension is not None:
        chosen = choose(candidates)
        text = render_extension_fragment(chosen, extension, options, Templates()) if chosen else None
    else:
        text = fragment_for(candidates, options, Templates(), extensions)
    if text is None:
        return None
    path = directory / FRAGMENT_NAME
    path.write_text(text)
    return path


def pack_format(name: str, options: Any, tree: GuestTree, artifacts_dir: Path, context: PackContext) -> Artifact:
    """One format of a build, its sidecars beside it; in a scratch directory of its own, as
    the formats are packed side by side."""
    packer = PACKERS[name]
    workdir = context.workdir / f"pack-{name}"
    workdir.mkdir()
    with step(f"Packing the {name}"):
        artifact = packer.pack(tree, artifacts_dir / packer.default_file_name, options,
                               dataclasses.replace(context, workdir=workdir))
    for sidecar, text in artifact.sidecars.items():
        (artifacts_dir / sidecar).write_text(text)
    return artifact


def run_build(config: BuildConfig, recipe: Recipe, tools: HostTools, runner: Runner,
              command: Sequence[str] = ()) -> BuildResult:
    options = config.rootfs
    output = check_output_dir(config.output.output, config.output.force)
    # A wrong agent or payload is refused before any staging exists; the probe is rendered inside it.
    precheck_inputs(options, runner)
    with tempfile.TemporaryDirectory(prefix="osbuilder-extensions-") as scratch:  # reading them needs room
        extensions = extension_entries(config.fragment, Path(scratch), runner)
    extension = options.extension_name if not get_init_mode(options.init).holds_agent else None
    with Staging(output) as stage:
        agent = resolve_agent(options, stage.work, runner)
        tree_path = stage.path / "rootfs"
        built = build_rootfs_into(tree_path, stage.work, options, recipe, agent, runner, private_tree=True,
                                  checked=False)
        summary = built.summary
        lock = None
        if options.installs_packages:  # what was installed, to install again with --lock
            request = install_request(options, recipe)
            lock = lock_of(recipe.name, summary.release, options.target.name, recipe.backend.name, options.mirror,
                           recipe.path, summary.creation_epoch, summary.installed,
                           options.pinned_world or request.packages, request.chosen_sources)
        with base_view(options.base, stage.work, runner) as base:
            tree = open_guest_tree(tree_path, options.init, options.arch, runner.privilege, base, just_checked=True)
        if summary.creation_epoch is not None:  # the build's settled epoch, which a flag may set
            tree = dataclasses.replace(tree, epoch=summary.creation_epoch)
        artifacts_dir = stage.path / "artifacts"
        artifacts_dir.mkdir()
        pieces = PieceStore(BuildCache(options.cache_dir).pieces_dir()) if options.cache_dir is not None else None
        context = PackContext(runner=runner, tools=tools, workdir=stage.work, pieces=pieces)
        # The tree is checked while its formats are packed: nothing is committed unless the
        # checks pass, and their refusal is the error reported, as when they ran first.
        packed = side_by_side([functools.partial(pack_format, name, pack_options, tree, artifacts_dir, context)
                               for name, pack_options in config.packing.items()], runner,
                              meanwhile=lambda: check_built_tree(tree_path, stage.work, options, recipe, built.agent,
                                                                 runner))
        # Nothing reads the tree again: it is removed while the artifacts are digested.
        artifacts: list[Artifact] = side_by_side([artifact.digested for artifact in packed], runner,
                                                 meanwhile=functools.partial(remove_tree, tree_path))
        release = config.release
        if release.layout == "kata":
            artifacts = arrange_kata_layout(artifacts_dir, artifacts, release, summary.distro, summary.release)
        sidecars = [(a.path.with_name(name), name) for a in artifacts for name in a.sidecars]
        if lock is not None:
            lock.write(artifacts_dir / LOCK_NAME)
            sidecars.append((artifacts_dir / LOCK_NAME, "packages-lock"))
        fragment = write_runtime_fragment(artifacts, config.fragment, artifacts_dir, release, extension, extensions)
        if fragment is not None:
            sidecars.append((fragment, "runtime-config"))
        if config.sbom.sbom:
            with step(f"Writing the {config.sbom.sbom} SBOM"):
                sbom = write_sbom(config.sbom.sbom, artifacts_dir,
                                  SbomInput(summary, artifacts, recipe.backend.purl_type, tree.epoch))
            sidecars.append((sbom, f"sbom-{config.sbom.sbom}"))
        tarballs: list[Path] = []
        if release.tarball:
            with step("Packing the release tarballs"):
                tarballs = write_release_tarballs(artifacts_dir, artifacts, release, tree.epoch, runner)
            sidecars += [(t, "release-tarball") for t in tarballs]
        # The output is the manifest's own directory: two builds of the same inputs into two
        # directories write the same manifest (its files are named relative to it too).
        recorded = {**config.as_json(), "output": "."}
        provenance = None
        if config.provenance.provenance:
            provenance = write_provenance(artifacts_dir / PROVENANCE_NAME, ProvenanceInput(
                artifacts, artifacts_dir, summary, recorded, command, recipe.path,
                artifacts_dir / LOCK_NAME if lock is not None else None, None, tarballs))
            sidecars.append((artifacts_dir / PROVENANCE_NAME, "provenance"))
        write_manifest(artifacts_dir / MANIFEST_NAME, recorded, summary, artifacts, tree.epoch, sidecars,
                       relative_to=artifacts_dir)
        if release.layout == "kata":
            write_sha256sums(artifacts_dir)
        stage.commit(artifacts_dir)
    final = [dataclasses.replace(a, path=output / a.path.relative_to(artifacts_dir)) for a in artifacts]
    return BuildResult(output, summary, final, provenance)
