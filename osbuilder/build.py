"""`osbuilder build`: the whole pipeline, rootfs then each requested artifact, into DIR."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from osbuilder.config import BuildConfig
from osbuilder.pack.artifact import Artifact
from osbuilder.pack.base import PackContext
from osbuilder.pack.guest_tree import open_guest_tree
from osbuilder.pack.manifest import MANIFEST_NAME, write_manifest
from osbuilder.pack.registry import PACKERS
from osbuilder.recipes import Recipe
from osbuilder.rootfs.stage import build_rootfs_into, resolve_agent
from osbuilder.rootfs.summary import Summary
from osbuilder.runner import Runner
from osbuilder.staging import Staging, check_output_dir
from osbuilder.steps import step
from osbuilder.tools import HostTools


@dataclass(frozen=True)
class BuildResult:
    output: Path
    summary: Summary
    artifacts: list[Artifact]


def run_build(config: BuildConfig, recipe: Recipe, tools: HostTools, runner: Runner) -> BuildResult:
    options = config.rootfs
    output = check_output_dir(config.output.output, config.output.force)
    # A wrong agent is refused before any staging exists; the probe is rendered inside it.
    agent = None if options.probe_agent else resolve_agent(options, output)
    with Staging(output) as stage:
        agent = agent or resolve_agent(options, stage.work)
        tree_path = stage.path / "rootfs"
        summary = build_rootfs_into(tree_path, stage.work, options, recipe, agent, runner)
        tree = open_guest_tree(tree_path, options.init, options.arch)
        artifacts_dir = stage.path / "artifacts"
        artifacts_dir.mkdir()
        context = PackContext(runner=runner, tools=tools, workdir=stage.work)
        artifacts: list[Artifact] = []
        for name, pack_options in config.packing.items():
            packer = PACKERS[name]
            with step(f"Packing the {name}"):
                artifact = packer.pack(tree, artifacts_dir / packer.default_file_name, pack_options, context)
            for sidecar, text in artifact.sidecars.items():
                (artifacts_dir / sidecar).write_text(text)
            artifacts.append(artifact.digested())
        write_manifest(artifacts_dir / MANIFEST_NAME, config.as_json(), summary, artifacts, tree.epoch)
        stage.commit(artifacts_dir)
    final = [dataclasses.replace(a, path=output / a.path.name) for a in artifacts]
    return BuildResult(output, summary, final)
