"""`osbuilder build`: the whole pipeline, rootfs then each requested artifact, into DIR."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from osbuilder.foundation.cache import BuildCache
from osbuilder.config import BuildConfig
from osbuilder.pack.artifact import Artifact
from osbuilder.pack.base import PackContext
from osbuilder.pack.guest_tree import open_guest_tree
from osbuilder.pack.gzip_pieces import PieceStore
from osbuilder.pack.manifest import MANIFEST_NAME, write_manifest
from osbuilder.pack.registry import PACKERS
from osbuilder.rootfs.recipes import Recipe
from osbuilder.read.kind import recognise_artifact
from osbuilder.release.layout import (ReleaseOptions, arrange_kata_layout, runtime_name, write_release_tarballs,
                               write_sha256sums)
from osbuilder.rootfs.stage import build_rootfs_into, precheck_inputs, resolve_agent
from osbuilder.rootfs.summary import Summary
from osbuilder.foundation.runner import Runner
from osbuilder.host.runtime_fragment import FRAGMENT_NAME, FragmentOptions, SlotArtifact, fragment_for
from osbuilder.release.sbom import SbomInput, write_sbom
from osbuilder.foundation.staging import Staging, check_output_dir
from osbuilder.foundation.steps import step
from osbuilder.foundation.templates import Templates
from osbuilder.foundation.tools import HostTools


@dataclass(frozen=True)
class BuildResult:
    output: Path
    summary: Summary
    artifacts: list[Artifact]


def write_runtime_fragment(artifacts: list[Artifact], options: FragmentOptions, directory: Path,
                           release: ReleaseOptions) -> Path | None:
    """kata-runtime.toml for the artifact a runtime boots, by the name the runtime uses, made
    from the artifacts as they read back (with their sidecars beside them), as `inspect
    --runtime-config-fragment` would make it."""
    candidates = [SlotArtifact(recognise_artifact(a.path), runtime_name(a, release)) for a in artifacts]
    text = fragment_for(candidates, options, Templates())
    if text is None:
        return None
    path = directory / FRAGMENT_NAME
    path.write_text(text)
    return path


def run_build(config: BuildConfig, recipe: Recipe, tools: HostTools, runner: Runner) -> BuildResult:
    options = config.rootfs
    output = check_output_dir(config.output.output, config.output.force)
    # A wrong agent or payload is refused before any staging exists; the probe is rendered inside it.
    precheck_inputs(options, runner)
    with Staging(output) as stage:
        agent = resolve_agent(options, stage.work, runner)
        tree_path = stage.path / "rootfs"
        summary = build_rootfs_into(tree_path, stage.work, options, recipe, agent, runner, private_tree=True).summary
        tree = open_guest_tree(tree_path, options.init, options.arch, runner.privilege)
        artifacts_dir = stage.path / "artifacts"
        artifacts_dir.mkdir()
        pieces = PieceStore(BuildCache(options.cache_dir).pieces_dir()) if options.cache_dir is not None else None
        context = PackContext(runner=runner, tools=tools, workdir=stage.work, pieces=pieces)
        artifacts: list[Artifact] = []
        for name, pack_options in config.packing.items():
            packer = PACKERS[name]
            with step(f"Packing the {name}"):
                artifact = packer.pack(tree, artifacts_dir / packer.default_file_name, pack_options, context)
            for sidecar, text in artifact.sidecars.items():
                (artifacts_dir / sidecar).write_text(text)
            artifacts.append(artifact.digested())
        release = config.release
        if release.layout == "kata":
            artifacts = arrange_kata_layout(artifacts_dir, artifacts, release, summary.distro, summary.release)
        sidecars = [(a.path.with_name(name), name) for a in artifacts for name in a.sidecars]
        fragment = write_runtime_fragment(artifacts, config.fragment, artifacts_dir, release)
        if fragment is not None:
            sidecars.append((fragment, "runtime-config"))
        if config.sbom.sbom:
            with step(f"Writing the {config.sbom.sbom} SBOM"):
                sbom = write_sbom(config.sbom.sbom, artifacts_dir,
                                  SbomInput(summary, artifacts, recipe.backend.purl_type, tree.epoch))
            sidecars.append((sbom, f"sbom-{config.sbom.sbom}"))
        if release.tarball:
            with step("Packing the release tarballs"):
                sidecars += [(t, "release-tarball")
                             for t in write_release_tarballs(artifacts_dir, artifacts, release, tree.epoch, runner)]
        write_manifest(artifacts_dir / MANIFEST_NAME, config.as_json(), summary, artifacts, tree.epoch, sidecars,
                       relative_to=artifacts_dir)
        if release.layout == "kata":
            write_sha256sums(artifacts_dir)
        stage.commit(artifacts_dir)
    final = [dataclasses.replace(a, path=output / a.path.relative_to(artifacts_dir)) for a in artifacts]
    return BuildResult(output, summary, final)
