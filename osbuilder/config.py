"""Per-command option sets and their merging: recipe defaults, then the --config file,
then flags (flags win), validated once, then immutable."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osbuilder.foundation.arch import get_arch, host_arch
from osbuilder.foundation.cache import default_cache_dir
from osbuilder.foundation.epoch import source_date_epoch_from_env
from osbuilder.foundation.guest_layout import AGENT_PATH, INIT_PATH
from osbuilder.foundation.documents import require_file
from osbuilder.foundation.errors import UserError
from osbuilder.foundation.privilege import Privilege
from osbuilder.rootfs.initmode import INIT_MODES, get_init_mode
from osbuilder.pack.registry import PACKERS, packer_names
from osbuilder.rootfs.backends.base import RELEASE, SECURITY
from osbuilder.rootfs.recipes import PACKAGE_FORM, Recipe, check_mirror, check_plain_name, load_recipe
from osbuilder.rootfs.bootstrap import install_request
from osbuilder.rootfs.dracut import HostSystem
from osbuilder.rootfs.extension_mount import check_name
from osbuilder.rootfs.options import DRACUT, RootfsOptions
from osbuilder.release.layout import ReleaseOptions
from osbuilder.host.runtime_fragment import FragmentOptions
from osbuilder.release.provenance import ProvenanceOptions
from osbuilder.release.sbom import SbomOptions
from osbuilder.foundation.settings import build_options, setting, to_json
from osbuilder.pack.source import OutputOptions, extension_defaults, extension_variant, pack_settings


@dataclass(frozen=True)
class FormatOptions:
    formats: tuple[str, ...] = setting(("initrd",), flag="--format", help="artifacts to build, comma separated",
                                       choices=packer_names, many=True)


@dataclass(frozen=True)
class BuildConfig:
    rootfs: RootfsOptions
    formats: tuple[str, ...]
    packing: dict[str, Any]  # packer name -> its options, for each format built
    output: OutputOptions
    fragment: FragmentOptions = FragmentOptions()
    sbom: SbomOptions = SbomOptions()
    release: ReleaseOptions = ReleaseOptions()
    provenance: ProvenanceOptions = ProvenanceOptions()

    def as_json(self) -> dict[str, Any]:
        data = to_json(self.rootfs)
        data["formats"] = list(self.formats)
        for options in self.packing.values():
            data.update(to_json(options))
        data.update(to_json(self.fragment))
        data.update(to_json(self.sbom))
        data.update(to_json(self.release))
        data.update(to_json(self.provenance))
        data.update(to_json(self.output))
        return data


def command_settings() -> dict[str, tuple[type, ...]]:
    """The settings each pipeline command takes, by option class (read from the registry)."""
    return {
        "rootfs": (RootfsOptions, OutputOptions),
        "build": (RootfsOptions, FormatOptions, *(packer.Options for packer in PACKERS.values()), FragmentOptions,
                  SbomOptions, ReleaseOptions, ProvenanceOptions, OutputOptions),
        **{name: pack_settings(name) for name in PACKERS},
    }


def make_rootfs_options(values: dict[str, Any], privilege: Privilege | None = None) -> tuple[RootfsOptions, Recipe]:
    """Merge settings with the recipe's defaults and validate everything that needs no build,
    for a build that runs with `privilege` (by default this process's)."""
    given = build_options(RootfsOptions, values)
    recipe = load_recipe(given.distro, given.recipes_dir)
    if given.lock is not None:
        given = _apply_lock(given, recipe)
    arch = get_arch(given.arch or host_arch().name).name
    if arch not in recipe.arches:
        raise UserError(f"distro '{recipe.name}' does not support arch '{arch}'",
                        f"use --arch {' or --arch '.join(recipe.arches)}")
    mode = get_init_mode(given.init)
    if not mode.holds_agent:
        given = _check_extension(given)
    elif given.extension or given.base or given.allow_setuid:
        flag = "--extension" if given.extension else "--base" if given.base else "--allow-setuid"
        modes = [name for name, m in INIT_MODES.items() if not m.holds_agent]
        raise UserError(f"{flag} applies to an extension image (--init {' or '.join(modes)}), not init mode "
                        f"{given.init}", f"drop {flag}, or pass --init {modes[0]}")
    if mode.holds_agent and given.init not in recipe.init_modes:
        raise UserError(f"distro '{recipe.name}' supports only init mode "
                        f"'{' or '.join(recipe.init_modes)}' (got '{given.init}')",
                        f"pass --init {recipe.init_modes[0]}")
    sources = [flag for flag, given_value in (("--agent", given.agent), ("--agent-tarball", given.agent_tarball),
                                              ("--agent-source", given.agent_source),
                                              ("--probe-agent", given.probe_agent)) if given_value]
    if len(sources) > 1:
        raise UserError(f"{' and '.join(sources)} exclude each other", "pass one of them")
    if not sources and mode.holds_agent:
        raise UserError("no agent given", "pass --agent FILE, or --probe-agent for a boot smoke test (or --agent "
                        "URL, or --agent-tarball)")
    takes_launcher = mode.takes_launcher
    if takes_launcher and given.launcher is None:
        raise UserError(f"init mode {given.init} needs the program that starts the agent", "pass --launcher FILE")
    if given.launcher is not None and not takes_launcher:
        modes = [name for name, mode in INIT_MODES.items() if mode.takes_launcher]
        raise UserError(f"--launcher applies to init mode {' or '.join(modes)}, not {given.init}", "drop --launcher")
    if given.launcher is not None:
        require_file(given.launcher, "launcher", "pass --launcher an executable file")
    if given.agent_sha256 is not None and (given.probe_agent or given.agent_source):
        raise UserError("--agent-sha256 pins a downloaded or given agent, not a built one", "drop --agent-sha256")
    if given.agent_source is not None and not Path(given.agent_source).is_dir():
        raise UserError(f"agent source '{given.agent_source}' is not a directory", "pass Kata's src/agent directory")
    release = given.release or recipe.default_release
    if given.method == DRACUT:
        release = _check_dracut(given, recipe, arch)
    elif release not in recipe.releases:
        raise UserError(f"distro '{recipe.name}' has no release '{release}'",
                        f"use --release {' or --release '.join(recipe.releases)}")
    if given.mirror:
        check_mirror("--mirror", given.mirror)
    if given.security_mirror:
        check_mirror("--security-mirror", given.security_mirror)
    for package in given.extra_packages:
        check_plain_name("--extra-packages", "package", package, PACKAGE_FORM)
    if given.kernel_modules is not None and not Path(given.kernel_modules).is_dir():
        raise UserError(f"kernel modules directory '{given.kernel_modules}' does not exist",
                        "pass --kernel-modules a directory such as /lib/modules/<version>")
    for flag, path in (("--guest-hooks", given.guest_hooks), ("--pause-image", given.pause_image),
                       ("--coco-components", given.coco_components)):
        if path is not None:
            require_file(path, flag, f"pass {flag} a tarball")
    if given.overlay is not None and not Path(given.overlay).is_dir():
        raise UserError(f"--overlay '{given.overlay}' is not a directory", "pass --overlay a directory")
    if given.overlay is not None:
        _refuse_overlay_over_init(Path(given.overlay))
    if given.agent_policy not in (None, "default"):
        require_file(given.agent_policy, "--agent-policy", "pass a .rego file, or 'default'")
    given = _check_guest_features(given, recipe)
    if given.existing is not None:
        if not Path(given.existing).is_dir() or Path(given.existing).resolve() == Path("/"):
            raise UserError(f"--existing '{given.existing}' is not a guest tree", "pass the directory you bootstrapped")
        _refuse_install_flags(given, "--existing (nothing is installed)")
    # Refuse overrides the recipe's package manager does not take, before any work.
    recipe.backend.apply_overrides(recipe.backend_section, given.backend_overrides())
    if given.no_cache and given.cache_dir is not None:
        raise UserError("--cache-dir and --no-cache exclude each other", "pass one of them")
    cache_dir = None if given.no_cache or not given.installs_packages else given.cache_dir or default_cache_dir()
    options = dataclasses.replace(given, arch=arch, release=release, mirror=given.mirror or recipe.mirror_for(arch),
                                  source_date_epoch=given.source_date_epoch if given.source_date_epoch is not None
                                  else source_date_epoch_from_env(), cache_dir=cache_dir)
    if options.lock is not None and not options.installs_packages:
        raise UserError("--lock applies to a tree installed from a recipe", "drop --lock")
    if options.installs_packages:
        recipe.backend.preflight(install_request(options, recipe), privilege or Privilege.detect())
    return options, recipe


def _refuse_overlay_over_init(overlay: Path) -> None:
    """An overlay is copied last, so one holding the init or the agent would replace what the
    init mode installed and fail validation after the build's work: refused before it."""
    for guest_path in (INIT_PATH, AGENT_PATH):
        relative = guest_path.lstrip("/")
        for candidate in (relative, f"usr/{relative}"):  # a merged-/usr tree holds /sbin under /usr
            if os.path.lexists(overlay / candidate):
                raise UserError(f"--overlay '{overlay}' holds {candidate}, which the init mode installs",
                                "remove it from the overlay (--agent and --launcher choose the agent and the init)")


# Kata's agent Makefile reads these from the environment; osbuilder passes them through.
AGENT_BUILD_VARIABLES = ("INIT_DATA", "USE_DEVMAPPER")
LIBSECCOMP_VARIABLE = "LIBSECCOMP_LIB_PATH"
PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


# What an extension image cannot carry: the agent and what only the base's agent reads.
EXTENSION_REFUSES = (("--agent", "agent"), ("--agent-tarball", "agent_tarball"), ("--agent-source", "agent_source"),
                     ("--probe-agent", "probe_agent"), ("--launcher", "launcher"), ("--pause-image", "pause_image"),
                     ("--agent-policy", "agent_policy"), ("--confidential", "confidential"),
                     ("--ca-certificates", "ca_certificates"), ("--ca-bundle", "ca_bundle"),
                     ("--agent-sha256", "agent_sha256"), ("--method dracut", "method"))


def _apply_lock(given: RootfsOptions, recipe: Recipe) -> RootfsOptions:
    """--lock FILE: its release, arch, mirror and epoch unless given, and its packages pinned."""
    from osbuilder.rootfs.lock import PackageLock, check_recipe

    lock = PackageLock.read(Path(given.lock))
    for what, mine, locked in (("distro", recipe.name, lock.distro), ("release", given.release, lock.release),
                               ("arch", given.arch and get_arch(given.arch).name, lock.arch)):
        if mine and mine != locked:
            raise UserError(f"--lock {given.lock} is for {what} {locked}, not {mine}",
                            f"drop --{what}, or pass the lock of a {mine} build")
    if given.extra_packages:
        raise UserError("--extra-packages with --lock: the lock names every package the build installs",
                        "drop --extra-packages, or build without --lock and lock that build")
    if given.existing is not None or given.method == DRACUT:
        raise UserError("--lock applies to a tree installed from a recipe", "drop --lock")
    check_recipe(lock, recipe.path, Path(given.lock))
    epoch = given.source_date_epoch if given.source_date_epoch is not None else source_date_epoch_from_env()
    # The suites the locked versions came from: a version from the security suite is found
    # there again (a lock written before sources were recorded names the release alone).
    security = next((s.url for s in lock.sources if s.kind == SECURITY), "")
    return dataclasses.replace(given, release=lock.release, arch=lock.arch, mirror=given.mirror or lock.mirror,
                               updates=given.with_updates and any(s.kind != RELEASE for s in lock.sources),
                               security_mirror=given.security_mirror or security,
                               pinned=lock.packages, pinned_world=lock.requested,
                               source_date_epoch=epoch if epoch is not None else lock.source_date_epoch)


def _check_extension(given: RootfsOptions) -> RootfsOptions:
    """An extension image (--init none): named, with no agent and nothing only a base holds."""
    if not given.extension:
        raise UserError(f"init mode {given.init} builds an extension image, which needs a name",
                        "pass --extension NAME (e.g. coco or devkit)")
    if len(given.extension) > 1:
        raise UserError(f"one build makes one extension image, and --extension names {len(given.extension)}",
                        "build each extension on its own")
    check_name(given.extension[0], "--extension")
    for flag, field in EXTENSION_REFUSES:
        value = getattr(given, field)
        if value and not (field == "method" and value != DRACUT):
            raise UserError(f"{flag} does not apply to an extension image (no agent, no init: the base holds "
                            "those)", f"drop {flag}, or build it into the base")
    return dataclasses.replace(given, seccomp=False)


def _check_guest_features(given: RootfsOptions, recipe: Recipe) -> RootfsOptions:
    """--confidential, the CA options and the agent build's inputs: refused when they cannot
    apply, and with what they imply filled in."""
    if given.confidential and not get_init_mode(given.init).runs_systemd:
        modes = [name for name, mode in INIT_MODES.items() if mode.runs_systemd]
        raise UserError(f"--confidential needs systemd in the guest (Kata's confidential guests run it), not init "
                        f"mode {given.init}", f"pass --init {' or --init '.join(modes)}, or drop --confidential")
    ca_certificates = given.ca_certificates or given.confidential
    if (ca_certificates or given.ca_bundle) and recipe.trust is None:
        raise UserError(f"recipe '{recipe.name}' names no CA certificate package ([trust])",
                        "add a [trust] table to the recipe, or drop --ca-certificates, --ca-bundle and --confidential")
    if ca_certificates and not given.installs_packages:
        raise UserError("--ca-certificates installs a package, and this tree is not installed from the recipe",
                        "drop --ca-certificates (and --confidential), or add the CA package to your tree yourself")
    for bundle in given.ca_bundle:
        path = require_file(bundle, "--ca-bundle", "pass a PEM file of CA certificates")
        if PEM_CERTIFICATE not in path.read_bytes():
            raise UserError(f"--ca-bundle '{bundle}' holds no PEM certificate ({PEM_CERTIFICATE.decode()})",
                            "pass the CA in PEM form (openssl x509 -in ca.der -inform der -out ca.pem)")
    environment = tuple((name, os.environ[name]) for name in AGENT_BUILD_VARIABLES if os.environ.get(name))
    libseccomp = given.libseccomp_lib_path or (Path(os.environ[LIBSECCOMP_VARIABLE])
                                               if os.environ.get(LIBSECCOMP_VARIABLE) else None)
    if given.agent_source is not None and given.seccomp:
        if libseccomp is None:
            raise UserError("the agent's seccomp support links libseccomp statically, as Kata's release builds it",
                            "pass --libseccomp-lib-path DIR (a directory with libseccomp.a for the agent's "
                            "target), or --no-seccomp")
        if not (Path(libseccomp) / "libseccomp.a").is_file():
            raise UserError(f"--libseccomp-lib-path '{libseccomp}' holds no libseccomp.a",
                            "pass the directory of a static libseccomp built for the agent's target")
    elif given.libseccomp_lib_path is not None:
        raise UserError("--libseccomp-lib-path applies to --agent-source with seccomp", "drop --libseccomp-lib-path")
    return dataclasses.replace(given, ca_certificates=ca_certificates, agent_build_environment=environment,
                               agent_libc=recipe.agent_libc,
                               libseccomp_lib_path=libseccomp if given.agent_source is not None else None)


def _refuse_install_flags(given: RootfsOptions, why: str) -> None:
    for flag, value in (("--extra-packages", given.extra_packages), ("--mirror", given.mirror),
                        ("--security-mirror", given.security_mirror), ("--components", given.components),
                        ("--keyring", given.keyring),
                        ("--cache-dir", given.cache_dir)):
        if value:
            raise UserError(f"{flag} does not apply to {why}", f"drop {flag}")


def _check_dracut(given: RootfsOptions, recipe: Recipe, arch: str) -> str:
    """dracut builds from this host's own system: its distribution, release and arch."""
    host = HostSystem.read()
    if host.distro != recipe.name and host.distro not in recipe.aliases:
        raise UserError(f"--method dracut builds from this host's system, which is {host.distro}, not {recipe.name}",
                        f"pass --distro {host.distro}")
    if arch != host_arch().name:
        raise UserError(f"--method dracut builds for this host's arch ({host_arch().name}), not {arch}",
                        "drop --arch, or use --method distro for another arch")
    if given.release and given.release != host.release:
        raise UserError(f"--method dracut builds this host's release ({host.release}), not {given.release}",
                        "drop --release")
    if given.existing is not None:
        raise UserError("--existing and --method dracut exclude each other", "pass one of them")
    _refuse_install_flags(given, "--method dracut (the host's system is used, nothing is installed)")
    return host.release


CONFIDENTIAL_VARIANT = "confidential"
def make_config(values: dict[str, Any]) -> tuple[BuildConfig, Recipe]:
    release = build_options(ReleaseOptions, values)
    rootfs, recipe = make_rootfs_options(values)
    if release.layout == "kata":
        # Kata's release always trims systemd (rootfs.sh -d) and names a confidential guest so.
        rootfs = dataclasses.replace(rootfs, trim_systemd=rootfs.trim_systemd is not False)
        if rootfs.confidential and release.variant is None:
            release = dataclasses.replace(release, variant=CONFIDENTIAL_VARIANT)
    release.validate()
    extension = rootfs.extension_name if not get_init_mode(rootfs.init).holds_agent else None
    if extension is not None:
        values = extension_defaults(values)
        if release.layout == "kata" and release.variant is None:
            # Kata's names for an extension: kata-containers-<name>-extension.img, its label.
            release = dataclasses.replace(release, variant=extension_variant(extension))
    formats = build_options(FormatOptions, values).formats
    packing = {}
    for name in formats:
        packer = PACKERS[name]
        options = packer.with_release_defaults(build_options(packer.Options, values), release.variant)
        if extension is not None:
            options = packer.as_extension(options, extension_variant(extension))
        packer.validate(options)
        packing[name] = options
    fragment = build_options(FragmentOptions, values)
    # Checked here; read (each must exist and be an extension) when the build starts, which in a
    # matrix comes after the targets that make them.
    if fragment.extension_images(require_files=False):
        mode = get_init_mode(rootfs.init)
        if not mode.mounts_extensions:
            able = [name for name, m in INIT_MODES.items() if m.mounts_extensions]
            raise UserError(f"--with-extension needs a base that mounts extension images, and init mode "
                            f"{rootfs.init} cannot (only {' or '.join(able)} runs Kata's extension mount)",
                            f"build the base with --init {' or --init '.join(able)}, or drop --with-extension")
    if release.layout == "kata" and "install_path" not in values:
        # The runtime reads the artifacts where the layout puts them under the prefix.
        fragment = dataclasses.replace(fragment, install_path=release.prefix / "share" / "kata-containers")
    return BuildConfig(rootfs=rootfs, formats=formats, packing=packing, output=build_options(OutputOptions, values),
                       fragment=fragment, sbom=build_options(SbomOptions, values), release=release,
                       provenance=build_options(ProvenanceOptions, values)), recipe
