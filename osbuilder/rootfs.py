"""`osbuilder rootfs`: bootstrap -> provision -> validate, into a directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from osbuilder.agent import AgentBinary, check_agent
from osbuilder.bootstrap import bootstrap
from osbuilder.config import BuildConfig
from osbuilder.fsutil import GuestRoot, clamp_mtimes
from osbuilder.provision import Provisioner
from osbuilder.recipes import Recipe
from osbuilder.runner import Runner
from osbuilder.staging import Staging, check_output_dir
from osbuilder.steps import step
from osbuilder.summary import Summary
from osbuilder.templates import Templates
from osbuilder.validate import validate_tree


@dataclass(frozen=True)
class RootfsResult:
    path: Path
    summary: Summary
    agent: AgentBinary


def build_rootfs_into(tree: Path, workdir: Path, config: BuildConfig, recipe: Recipe, agent: AgentBinary,
                      runner: Runner) -> Summary:
    """Build a guest tree at `tree` (a fresh directory inside some staging area)."""
    with step(f"Bootstrapping {recipe.name} {config.release} for {config.arch}"):
        bootstrap(config, recipe, tree, workdir, runner)
    guest = GuestRoot(tree)
    with step(f"Provisioning for init mode '{config.init}'"):
        summary = Provisioner(guest, config, recipe, agent, Templates()).run()
    with step("Validating the guest"):
        validate_tree(guest, config.init, config.target, agent)
    if config.source_date_epoch is not None:
        clamp_mtimes(tree, config.source_date_epoch)
    return summary


def build_rootfs(config: BuildConfig, recipe: Recipe, runner: Runner) -> RootfsResult:
    output = check_output_dir(config.output, config.force)
    agent = check_agent(config.agent, config.target)
    with Staging(output) as stage:
        tree = stage.path / "rootfs"
        summary = build_rootfs_into(tree, stage.work, config, recipe, agent, runner)
        stage.commit(tree)
    return RootfsResult(output, summary, agent)
