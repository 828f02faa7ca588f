"""`osbuilder build`: the whole pipeline, rootfs then each requested artifact, into DIR."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from osbuilder.config import BuildConfig
from osbuilder.guest_tree import open_guest_tree
from osbuilder.image import IMAGE_NAME, ISO_NAME, ROOT_HASH_NAME, pack_image, pack_iso
from osbuilder.artifact import Artifact
from osbuilder.initrd import INITRD_NAME, pack_initrd
from osbuilder.manifest import MANIFEST_NAME, write_manifest
from osbuilder.recipes import Recipe
from osbuilder.rootfs import build_rootfs_into, resolve_agent
from osbuilder.runner import Runner
from osbuilder.staging import Staging, check_output_dir
from osbuilder.steps import step
from osbuilder.summary import Summary
from osbuilder.tools import HostTools


@dataclass(frozen=True)
class BuildResult:
    output: Path
    summary: Summary
    artifacts: list[Artifact]


def run_build(config: BuildConfig, recipe: Recipe, tools: HostTools, runner: Runner) -> BuildResult:
    output = check_output_dir(config.output, config.force)
    # A wrong agent is refused before any staging exists; the probe is rendered inside it.
    agent = None if config.probe_agent else resolve_agent(config, output)
    with Staging(output) as stage:
        agent = agent or resolve_agent(config, stage.work)
        tree_path = stage.path / "rootfs"
        summary = build_rootfs_into(tree_path, stage.work, config, recipe, agent, runner)
        tree = open_guest_tree(tree_path, config.init)
        artifacts_dir = stage.path / "artifacts"
        artifacts_dir.mkdir()
        artifacts: list[Artifact] = []
        if "initrd" in config.formats:
            with step(f"Packing the initrd ({config.compression})"):
                artifacts.append(pack_initrd(tree, artifacts_dir / INITRD_NAME, config.compression, config.level,
                                             tools, runner))
        if "image" in config.formats:
            options = config.image_options()
            with step(f"Packing the {options.fs} image"):
                image = pack_image(tree, artifacts_dir / IMAGE_NAME, options, stage.work, runner)
            artifacts.append(image)
            verity = image.details.get("verity")
            if isinstance(verity, dict):
                (artifacts_dir / ROOT_HASH_NAME).write_text(f"{verity['kernel_params']}\n")
        if "iso" in config.formats:
            with step("Packing the ISO"):
                artifacts.append(pack_iso(tree, artifacts_dir / ISO_NAME))
        artifacts = [artifact.digested() for artifact in artifacts]
        write_manifest(artifacts_dir / MANIFEST_NAME, config, summary, artifacts, tree.epoch)
        stage.commit(artifacts_dir)
    final = [dataclasses.replace(a, path=output / a.path.name) for a in artifacts]
    return BuildResult(output, summary, final)
