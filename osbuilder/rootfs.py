"""`osbuilder rootfs`: bootstrap -> provision -> validate, into a directory."""

from __future__ import annotations

import logging
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


log = logging.getLogger("osbuilder")

PROBE_WARNING = ("this guest holds osbuilder's probe agent, not a sandbox agent: it only reports its boot "
                 "and powers off (use it with `osbuilder boot`, never in production)")


def resolve_agent(config: BuildConfig, workdir: Path) -> AgentBinary:
    """The agent to install: the user's ELF, checked against the target, or the probe."""
    if config.probe_agent:
        from osbuilder.probe import render_probe

        log.warning("warning: %s", PROBE_WARNING)
        return render_probe(Templates(), workdir / "osbuilder-probe")
    assert config.agent is not None
    return check_agent(config.agent, config.target)


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
    # A wrong agent is refused before any staging exists; the probe is rendered inside it.
    agent = None if config.probe_agent else resolve_agent(config, output)
    with Staging(output) as stage:
        agent = agent or resolve_agent(config, stage.work)
        tree = stage.path / "rootfs"
        summary = build_rootfs_into(tree, stage.work, config, recipe, agent, runner)
        stage.commit(tree)
    return RootfsResult(output, summary, agent)
