"""The rootfs stage: bootstrap -> provision -> validate, into a directory."""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from osbuilder.foundation.fsutil import GuestRoot, TreeListing, clamp_mtimes
from osbuilder.rootfs.initmode import get_init_mode
from osbuilder.rootfs.recipes import Recipe
from osbuilder.foundation.documents import require_file
from osbuilder.foundation.errors import CommandError, UserError
from osbuilder.rootfs.lock import SNAPSHOT_FIX, missing_pin, verify_installed
from osbuilder.rootfs.input_epoch import epoch_after_bootstrap, read_indexes_before_bootstrap
from osbuilder.foundation.fetch import fetch, is_url
from osbuilder.rootfs.extract import check_tarball
from osbuilder.rootfs.agent import AgentBinary, AgentBuild, agent_from_source, agent_from_tarball, check_agent, check_pinned
from osbuilder.rootfs.bootstrap import bootstrap
from osbuilder.rootfs.options import RootfsOptions
from osbuilder.rootfs.payloads import check_payload_layouts
from osbuilder.rootfs.probe import render_probe
from osbuilder.rootfs.provision import Provisioner
from osbuilder.rootfs.summary import Summary
from osbuilder.rootfs.validate import validate_tree
from osbuilder.read.base_tree import base_view
from osbuilder.read.kind import recognise_artifact
from osbuilder.foundation.runner import FILESYSTEM, Runner
from osbuilder.foundation.staging import Staging, check_output_dir
from osbuilder.foundation.cache import default_cache_dir
from osbuilder.foundation.verified import VerifiedTrees
from osbuilder.foundation.steps import step
from osbuilder.foundation.templates import Templates

log = logging.getLogger("osbuilder")

PROBE_WARNING = ("this guest holds osbuilder's probe agent, not a sandbox agent: it only reports its boot "
                 "and powers off (use it with `osbuilder boot`, never in production)")


def precheck_inputs(options: RootfsOptions, runner: Runner) -> None:
    """Refuse a wrong local agent or payload before any staging exists (downloads, tarballs and
    the probe are checked where they are made, inside staging)."""
    check_payload_layouts(options, runner)
    if options.base is not None:
        # Here, not with the other settings: in a matrix the base may be a target built first.
        if not Path(options.base).exists():
            raise UserError(f"--base '{options.base}' does not exist", "pass the base image or rootfs directory")
        recognise_artifact(Path(options.base))  # a base that is no artifact is refused before any work
    if options.agent_tarball is not None and not is_url(options.agent_tarball):
        # Every member checked here, so a bad one is refused before staging, not while unpacking.
        tarball = require_file(options.agent_tarball, "--agent-tarball", "pass Kata's kata-static-agent.tar.zst")
        check_pinned(tarball, options.agent_sha256)
        with tempfile.TemporaryDirectory(prefix="osbuilder-agent-tarball-") as scratch:
            check_tarball(tarball, Path(scratch), runner)
    source = options.agent
    if options.probe_agent or options.agent_tarball or options.agent_source or source is None or is_url(source):
        return
    path = require_file(source, "agent file", "pass --agent the path of the agent")
    check_pinned(path, options.agent_sha256)
    check_agent(path, options.target)


def resolve_agent(options: RootfsOptions, workdir: Path, runner: Runner) -> AgentBinary | None:
    """The agent to install: the user's ELF (a file or a download, pinned by --agent-sha256),
    Kata's agent tarball, or the probe; checked against the target (build_rootfs_into strips it).
    None for an extension image, which holds no agent."""
    if not get_init_mode(options.init).holds_agent:
        return None
    if options.probe_agent:
        log.warning("warning: %s", PROBE_WARNING)
        return render_probe(Templates(), workdir / "osbuilder-probe")
    if options.agent_source is not None:
        build = AgentBuild(options.target, get_init_mode(options.init).agent_is_init, options.seccomp,
                           options.agent_policy is not None, libc=options.agent_libc,
                           libseccomp_lib_path=options.libseccomp_lib_path,
                           environment=options.agent_build_environment)
        return agent_from_source(Path(options.agent_source), build, workdir / "agent-install", runner)
    source = options.agent_tarball or options.agent
    assert source is not None
    if is_url(source):
        name = "agent.tarball" if options.agent_tarball else "kata-agent"
        path = fetch(source, options.agent_sha256, workdir / name, options.cache_dir, progress=runner.progress)
    else:
        path = Path(source)
        if not path.is_file():
            flag = "--agent-tarball" if options.agent_tarball else "--agent"
            raise UserError(f"agent file '{path}' does not exist", f"pass {flag} the path of the agent")
        check_pinned(path, options.agent_sha256)
    if options.agent_tarball:
        return agent_from_tarball(path, workdir / "agent-tarball", options.target, workdir, runner)
    return check_agent(path, options.target)


def strip_agent(agent: AgentBinary | None, options: RootfsOptions, workdir: Path,
                runner: Runner) -> AgentBinary | None:
    if agent is None or not options.strip or agent.probe:
        return agent
    # binutils-multiarch's strip reads all four architectures; the installed bytes are recorded.
    stripped = workdir / "kata-agent.stripped"
    runner.run(["strip", "--strip-unneeded", "-o", str(stripped), str(agent.path)],
               hint="install binutils-multiarch (./setup.sh), or pass --no-strip", limit=FILESYSTEM)
    checked = check_agent(stripped, options.target)
    return dataclasses.replace(agent, path=checked.path, sha256=checked.sha256,
                               description=agent.description + ", stripped")


def bootstrap_and_strip(options: RootfsOptions, recipe: Recipe, tree: Path, workdir: Path,
                        agent: AgentBinary | None, runner: Runner, private_tree: bool = False) -> AgentBinary | None:
    """Bootstrap the tree; returns the agent as it will be installed. Stripping reads the agent
    and writes only into the work directory, so it runs in a thread while the package manager
    does, instead of adding its time to every build."""
    with ThreadPoolExecutor(max_workers=1) as background:
        stripping = background.submit(strip_agent, agent, options, workdir, runner)
        with step(f"Copying {options.existing}" if options.existing else
                  "Starting the extension from an empty tree" if options.starts_empty else
                  "Building from this host's system with dracut" if not options.installs_packages else
                  f"Bootstrapping {recipe.name} {options.release} for {options.arch}"):
            try:
                bootstrap(options, recipe, tree, workdir, runner, private_tree)
            except (CommandError, UserError) as exc:
                missing = missing_pin(exc.stderr_tail if isinstance(exc, CommandError) else exc.message,
                                      recipe.backend.missing_pin_patterns) if options.pinned else None
                if missing is None:
                    raise
                raise UserError(f"--lock {options.lock}: the mirror no longer has {missing}", SNAPSHOT_FIX) from None
        return stripping.result()


@dataclass(frozen=True)
class RootfsResult:
    path: Path
    summary: Summary
    agent: AgentBinary | None  # as installed (stripped); None in an extension image


def build_rootfs_into(tree: Path, workdir: Path, options: RootfsOptions, recipe: Recipe,
                      agent: AgentBinary | None, runner: Runner, private_tree: bool = False,
                      checked: bool = True) -> RootfsResult:
    """Build a guest tree at `tree` (a fresh directory inside some staging area) with `agent`
    (from resolve_agent: checked, not yet stripped). `private_tree`: the tree is only packed
    and then removed, never handed over, so it may share inodes with the build cache. Not
    `checked`: the caller runs check_built_tree itself (build, while it packs the tree)."""
    options = read_indexes_before_bootstrap(options, recipe, workdir, runner)
    agent = bootstrap_and_strip(options, recipe, tree, workdir, agent, runner, private_tree)
    options = epoch_after_bootstrap(options, tree, workdir, runner)
    guest = GuestRoot(tree)
    # Provisioning removes /var/lib, and the package database with it: read it first.
    packages = recipe.backend.installed_packages(guest, runner, recipe.backend_section)
    if options.pinned:
        verify_installed(options.pinned, packages, options.lock)
    slim_files = None
    if options.slim:
        doomed = tuple(p.name for p in packages if any(fnmatch.fnmatchcase(p.name, pattern)
                                                       for pattern in recipe.slim_packages))
        slim_files = recipe.backend.package_files(guest, runner, recipe.backend_section, doomed)
    mode = get_init_mode(options.init)
    with step(f"Provisioning for init mode '{options.init}'" if mode.holds_agent else
              f"Provisioning the extension image '{options.extension_name}'"):
        summary = Provisioner(guest, options, recipe, agent, Templates(), packages, workdir, runner,
                              slim_files).run()
    if options.source_date_epoch is not None:  # mtimes alone: nothing the checks read
        clamp_mtimes(tree, options.source_date_epoch)
    if checked:
        check_built_tree(tree, workdir, options, recipe, agent, runner)
    return RootfsResult(tree, summary, agent)


def check_built_tree(tree: Path, workdir: Path, options: RootfsOptions, recipe: Recipe, agent: AgentBinary | None,
                     runner: Runner) -> None:
    """The checks a tree osbuilder built must pass (validate_tree) before anything is made of it."""
    with step("Validating the guest"):
        # The recipe's tools are required of trees installed from its package set.
        with base_view(options.base, workdir, runner) as base:
            validate_tree(GuestRoot(tree), options.init, options.target, agent,
                          tools=recipe.tools if options.installs_packages and get_init_mode(options.init).holds_agent
                          else (), allow_setuid=options.allow_setuid, base=base)


def build_rootfs(options: RootfsOptions, recipe: Recipe, output: Path, force: bool, runner: Runner) -> RootfsResult:
    output = check_output_dir(output, force)
    # A wrong agent or payload is refused before any staging exists; the probe is rendered inside it.
    precheck_inputs(options, runner)
    with Staging(output) as stage:
        agent = resolve_agent(options, stage.work, runner)
        tree = stage.path / "rootfs"
        built = build_rootfs_into(tree, stage.work, options, recipe, agent, runner)
        if not options.no_cache:  # the packer of this tree need not check it again
            # Recorded before the rename into place, which leaves what is inside untouched.
            VerifiedTrees(options.cache_dir or default_cache_dir()).remember(TreeListing(tree), options.init,
                                                                             options.target.name)
        stage.commit(tree)
    return dataclasses.replace(built, path=output)
