"""kata-runtime.toml: the part of Kata's configuration.toml that must match an artifact
(which slot, the filesystem, whether to plug it as an NVDIMM, the verity parameters), so
the mismatches `check` reports are prevented where the artifact is made."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from osbuilder import __version__
from osbuilder.foundation.errors import UserError
from osbuilder.pack.artifact import ArtifactInfo
from osbuilder.pack.registry import PACKERS, get_packer
from osbuilder.foundation.settings import as_path, setting
from osbuilder.foundation.templates import Templates

FRAGMENT_NAME = "kata-runtime.toml"
KATA_INSTALL_PATH = Path("/opt/kata/share/kata-containers")


@dataclass(frozen=True)
class FragmentOptions:
    hypervisor: str = setting("qemu", help="the hypervisor section of kata-runtime.toml ([hypervisor.<name>])",
                              metavar="NAME")
    install_path: Path = setting(KATA_INSTALL_PATH, help="where the artifacts will live on the host, for the paths "
                                 f"kata-runtime.toml names (default {KATA_INSTALL_PATH})", metavar="DIR",
                                 parse=as_path)


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


def render_fragment(artifact: SlotArtifact, options: FragmentOptions, templates: Templates) -> str:
    packer = get_packer(artifact.info.kind)
    assert packer.runtime_slot is not None
    settings = [s for s in packer.runtime_settings(artifact.info) if s.value is not None]
    return templates.render("kata-runtime.toml.j2", osbuilder_version=__version__, file_name=artifact.file_name,
                            description=packer.describe_info(artifact.info), hypervisor=options.hypervisor,
                            slot=packer.runtime_slot.key,
                            path=str(Path(options.install_path) / artifact.file_name), settings=settings)


def fragment_for(artifacts: list[SlotArtifact], options: FragmentOptions, templates: Templates) -> str | None:
    """The fragment for the artifact a runtime boots, or None when none fills a slot."""
    chosen = choose(artifacts)
    return render_fragment(chosen, options, templates) if chosen is not None else None


def fragment_for_report(reports: list, options: FragmentOptions, templates: Templates) -> str:
    """The fragment for inspected artifacts (inspect --runtime-config-fragment)."""
    text = fragment_for([SlotArtifact(report.artifact, report.artifact.path.name) for report in reports],
                        options, templates)
    if text is None:
        slots = sorted({p.runtime_slot.key for p in PACKERS.values() if p.runtime_slot})
        raise UserError(f"a runtime configuration boots {' or '.join(slots)}, and this is none of them",
                        f"drop --runtime-config-fragment, or inspect {' or '.join(slots)}")
    return text
