"""kata-runtime.toml: the part of Kata's configuration.toml that must match an artifact
(which slot, the filesystem, whether to plug it as an NVDIMM, the verity parameters), so
the mismatches `check` reports are prevented where the artifact is made."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from osbuilder import __version__
from osbuilder.foundation.errors import UserError
from osbuilder.foundation.runner import Runner
from osbuilder.pack.artifact import ArtifactInfo
from osbuilder.pack.image import verity_params_beside
from osbuilder.rootfs.extension_mount import MOUNT_ROOT, SERIAL_PREFIX, parse_extension_images
from osbuilder.pack.registry import PACKERS, get_packer
from osbuilder.foundation.settings import as_path, setting
from osbuilder.foundation.templates import Templates

log = logging.getLogger("osbuilder")

FRAGMENT_NAME = "kata-runtime.toml"
KATA_INSTALL_PATH = Path("/opt/kata/share/kata-containers")


@dataclass(frozen=True)
class FragmentOptions:
    hypervisor: str = setting("qemu", help="the hypervisor section of kata-runtime.toml ([hypervisor.<name>])",
                              metavar="NAME")
    install_path: Path = setting(KATA_INSTALL_PATH, help="where the artifacts will live on the host, for the paths "
                                 f"kata-runtime.toml names (default: {KATA_INSTALL_PATH})", metavar="DIR",
                                 parse=as_path)
    with_extension: tuple[str, ...] = setting((), help="an extension image (osbuilder build --init none) this base "
                                              "boots with, as NAME=IMAGE (repeatable): kata-runtime.toml lists it "
                                              "under guest_extension_images, at --install-path/<its file name>",
                                              metavar="NAME=IMAGE", many=True, repeatable=True)

    def extension_images(self, require_files: bool = True) -> list[tuple[str, Path]]:
        """--with-extension as (name, image), checked for what needs no reading."""
        return parse_extension_images(self.with_extension, "--with-extension", require_files)


@dataclass(frozen=True)
class ExtensionEntry:
    """One [[hypervisor.<name>.guest_extension_images]] table (docs/kata-contract.md, composable guests)."""

    name: str
    path: str  # where the runtime finds the image on the host
    verity_params: str  # its root-hash line; empty for an unmeasured extension


@dataclass(frozen=True)
class SlotArtifact:
    """An artifact read back, and the name the runtime's configuration will give it."""

    info: ArtifactInfo
    file_name: str


def choose(artifacts: list[SlotArtifact]) -> SlotArtifact | None:
    """The artifact a runtime boots: of those that fill a slot, the one whose packer's slot is
    preferred (the image when there is one, Kata's default, else the initrd)."""
    slotted = [a for a in artifacts if get_packer(a.info.kind).runtime_slot is not None]
    return min(slotted, key=lambda a: get_packer(a.info.kind).runtime_slot.preference, default=None)


def render_fragment(artifact: SlotArtifact, options: FragmentOptions, templates: Templates,
                    extensions: list[ExtensionEntry] | None = None) -> str:
    packer = get_packer(artifact.info.kind)
    assert packer.runtime_slot is not None
    settings = [s for s in packer.runtime_settings(artifact.info) if s.value is not None]
    return templates.render("kata-runtime.toml.j2", osbuilder_version=__version__, file_name=artifact.file_name,
                            description=packer.describe_info(artifact.info), hypervisor=options.hypervisor,
                            slot=packer.runtime_slot.key,
                            path=str(Path(options.install_path) / artifact.file_name), settings=settings,
                            extensions=extensions or [], serial_prefix=SERIAL_PREFIX, mount_root=MOUNT_ROOT)


def render_extension_fragment(artifact: SlotArtifact, extension: str, options: FragmentOptions,
                              templates: Templates) -> str:
    """An extension build's fragment: only its guest_extension_images table, which goes with a
    base's fragment (the base's own image line is the base's)."""
    entry = ExtensionEntry(extension, str(Path(options.install_path) / artifact.file_name),
                           verity_params_beside(artifact.info) or "")
    return templates.render("kata-runtime.toml.j2", osbuilder_version=__version__, file_name=artifact.file_name,
                            description=get_packer(artifact.info.kind).describe_info(artifact.info),
                            hypervisor=options.hypervisor, slot=None, extensions=[entry], settings=[],
                            serial_prefix=SERIAL_PREFIX, mount_root=MOUNT_ROOT)


def extension_entries(options: FragmentOptions, workdir: Path, runner: Runner) -> list[ExtensionEntry]:
    """--with-extension, read: each must be an extension image (init mode none), its root-hash
    line beside it when it is measured."""
    from osbuilder.read.extension import read_extension
    from osbuilder.read.kind import verity_params_for

    entries = []
    for name, image in options.extension_images():
        extension = read_extension(image, f"--with-extension {name}", workdir, runner)
        artifact = extension.artifact
        if extension.recorded_name != name:
            log.warning("warning: --with-extension %s: the image records the name '%s'; the guest mounts it as "
                        "%s", name, extension.recorded_name, name)
        params = verity_params_for(artifact) if artifact.verity else ""
        entries.append(ExtensionEntry(name, str(Path(options.install_path) / image.name), params))
    return entries


def fragment_for(artifacts: list[SlotArtifact], options: FragmentOptions, templates: Templates,
                 extensions: list[ExtensionEntry] | None = None) -> str | None:
    """The fragment for the artifact a runtime boots, or None when none fills a slot."""
    chosen = choose(artifacts)
    return render_fragment(chosen, options, templates, extensions) if chosen is not None else None


def fragment_for_report(reports: list, options: FragmentOptions, templates: Templates) -> str:
    """The fragment for inspected artifacts (inspect --runtime-config-fragment)."""
    text = fragment_for([SlotArtifact(report.artifact, report.artifact.path.name) for report in reports],
                        options, templates)
    if text is None:
        slots = sorted({p.runtime_slot.key for p in PACKERS.values() if p.runtime_slot})
        raise UserError(f"a runtime configuration boots {' or '.join(slots)}, and this is none of them",
                        f"drop --runtime-config-fragment, or inspect {' or '.join(slots)}")
    return text
