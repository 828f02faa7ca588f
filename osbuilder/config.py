"""BuildConfig: recipe defaults + command-line flags, validated once, then immutable."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osbuilder.arch import ARCHES, Arch, get_arch, host_arch
from osbuilder.errors import UserError
from osbuilder.recipes import INIT_MODES, Recipe, load_recipe
from osbuilder.settings import comma_list, setting, to_json

if TYPE_CHECKING:
    from osbuilder.image import ImageOptions


BUILD_FORMATS = ("initrd", "image", "iso")


def _path(text: str) -> Path:
    return Path(text)


@dataclass(frozen=True)
class BuildConfig:
    distro: str = setting(help="distribution recipe to build from (see `osbuilder distros`)", required=True)
    init: str = setting(help="how the agent starts: as PID 1 (agent) or as a systemd service (systemd)",
                        choices=INIT_MODES, required=True)
    output: Path = setting(help="output directory", flag="--output", short="-o", metavar="DIR",
                           parse=_path, required=True)
    agent: Path | None = setting(None, help="agent executable to install (an ELF for --arch)", metavar="FILE",
                                 parse=_path)
    probe_agent: bool = setting(False, help="install osbuilder's probe agent instead of an agent: a smoke test "
                                "that reports the init mode and cgroup driver at boot, then powers off "
                                "(for `osbuilder boot`, never for production)", boolean=True)
    release: str = setting("", help="distribution release (default: the recipe's)")
    arch: str = setting("", help=f"target architecture: {', '.join(ARCHES)} (default: the host's)")
    agent_version: str = setting("unknown", help="agent version recorded in osbuilder.yaml", metavar="V")
    extra_packages: tuple[str, ...] = setting((), help="more packages to install, comma separated",
                                              metavar="A,B", parse=comma_list)
    mirror: str = setting("", help="package mirror URL (default: the recipe's)", metavar="URL")
    components: tuple[str, ...] = setting((), help="archive components, comma separated (default: the recipe's)",
                                          metavar="A,B", parse=comma_list)
    trim_systemd: bool = setting(False, help="remove systemd units a sandbox never needs", boolean=True)
    kernel_modules: Path | None = setting(None, help="directory copied to /lib/modules/<its name> in the guest",
                                          metavar="DIR", parse=_path)
    seccomp: bool = setting(True, help="install the seccomp library the agent needs for seccomp filters",
                            boolean=True)
    force: bool = setting(False, help="replace a non-empty output", boolean=True)
    cache_dir: Path | None = setting(None, help="reuse bootstrapped trees from this cache directory",
                                     metavar="DIR", parse=_path)
    recipes_dir: Path | None = setting(None, help="read distribution recipes from this directory",
                                       metavar="DIR", parse=_path)
    formats: tuple[str, ...] = setting(("initrd",), flag="--format", help="artifacts to build, comma separated: "
                                       "initrd, image, iso", metavar="initrd,image,iso", parse=comma_list,
                                       commands=("build",))
    compression: str = setting("gzip", help="initrd compression (gzip is the only one Kata's kernels unpack)",
                               choices=("gzip", "zstd", "xz", "lz4", "none"), commands=("build", "initrd"))
    level: int | None = setting(None, help="compression level (default: the codec's tuned default)", metavar="N",
                                parse=int, commands=("build", "initrd"))
    fs: str = setting("ext4", help="image filesystem", choices=("ext4", "xfs", "erofs"), commands=("build", "image"))
    dax: bool = setting(True, help="NVDIMM/DAX header, so the image can be plugged as an NVDIMM (--no-dax: "
                        "a plain MBR for virtio-blk)", boolean=True, commands=("build", "image"))
    free_space: int = setting(0, help="free space to leave in the filesystem, in MiB", metavar="MiB", parse=int,
                              commands=("build", "image"))
    align: int | None = setting(None, help="round the image up to this many MiB (default: 128 with DAX, 1 without)",
                                metavar="MiB", parse=int, commands=("build", "image"))
    block_size: int = setting(4096, help="filesystem block size in bytes", metavar="BYTES", parse=int,
                              commands=("build", "image"))
    verity: bool = setting(False, help="add a dm-verity hash partition after the data partition", boolean=True,
                           commands=("build", "image"))
    # Not a flag: the reproducible-builds convention is the environment variable.
    source_date_epoch: int | None = None

    def image_options(self) -> "ImageOptions":
        return self.image_options_from(dataclasses.asdict(self))

    @staticmethod
    def image_options_from(values: dict[str, Any]) -> "ImageOptions":
        """Image options from settings given by name; missing ones take BuildConfig's defaults."""
        from osbuilder.image import ImageOptions

        merged = {f.name: f.default for f in dataclasses.fields(BuildConfig)
                  if f.default is not dataclasses.MISSING}
        merged.update(values)
        return ImageOptions(fs=merged["fs"], dax=merged["dax"], free_space_mib=merged["free_space"],
                            align_mib=merged["align"], block_size=merged["block_size"], verity=merged["verity"])

    @property
    def target(self) -> Arch:
        return get_arch(self.arch)

    def identity(self) -> dict[str, Any]:
        """Everything that decides the guest's content (not where it is written)."""
        data = to_json(self)
        for incidental in ("output", "force", "cache_dir", "recipes_dir"):
            data.pop(incidental)
        data["agent"] = Path(self.agent).name if self.agent is not None else None
        return data

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()


def source_date_epoch_from_env() -> int | None:
    raw = os.environ.get("SOURCE_DATE_EPOCH")
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise UserError(f"SOURCE_DATE_EPOCH must be a whole number of seconds (got '{raw}')",
                        "set it to e.g. $(git log -1 --format=%ct)")
    return int(raw)


def make_config(values: dict[str, Any]) -> tuple[BuildConfig, Recipe]:
    """Merge flags with recipe defaults and validate everything that needs no build."""
    recipes_dir = values.get("recipes_dir")
    recipe = load_recipe(values["distro"], recipes_dir)
    arch = get_arch(values.get("arch") or host_arch().name).name
    if arch not in recipe.arches:
        raise UserError(f"distro '{recipe.name}' does not support arch '{arch}'",
                        f"use --arch {' or --arch '.join(recipe.arches)}")
    init = values["init"]
    if init not in recipe.init_modes:
        raise UserError(f"distro '{recipe.name}' supports only init mode "
                        f"'{' or '.join(recipe.init_modes)}' (got '{init}')",
                        f"pass --init {recipe.init_modes[0]}")
    if values.get("probe_agent") and values.get("agent") is not None:
        raise UserError("--agent and --probe-agent exclude each other", "pass one of them")
    if not values.get("probe_agent") and values.get("agent") is None:
        raise UserError("no agent given", "pass --agent FILE, or --probe-agent for a boot smoke test")
    release = values.get("release") or recipe.default_release
    if release not in recipe.releases:
        raise UserError(f"distro '{recipe.name}' has no release '{release}'",
                        f"use --release {' or --release '.join(recipe.releases)}")
    for fmt in values.get("formats", ()):
        if fmt not in BUILD_FORMATS:
            raise UserError(f"unknown format '{fmt}'", f"use --format {' or '.join(BUILD_FORMATS)}")
    if "image" in values.get("formats", ()):
        BuildConfig.image_options_from(values).validate()
    kernel_modules = values.get("kernel_modules")
    if kernel_modules is not None and not Path(kernel_modules).is_dir():
        raise UserError(f"kernel modules directory '{kernel_modules}' does not exist",
                        "pass --kernel-modules a directory such as /lib/modules/<version>")
    merged = dict(values)
    merged.update(
        arch=arch,
        release=release,
        mirror=values.get("mirror") or recipe.mirror_for(arch),
        components=values.get("components") or recipe.components,
        source_date_epoch=source_date_epoch_from_env(),
    )
    known = {f.name for f in dataclasses.fields(BuildConfig)}
    return BuildConfig(**{k: v for k, v in merged.items() if k in known}), recipe
