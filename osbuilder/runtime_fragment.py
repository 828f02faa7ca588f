"""kata-runtime.toml: the part of Kata's configuration.toml that must match an artifact
(which slot, the filesystem, whether to plug it as an NVDIMM, the verity parameters), so
the mismatches `check` reports are prevented where the artifact is made."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from osbuilder import __version__
from osbuilder.settings import as_path, setting
from osbuilder.templates import Templates

FRAGMENT_NAME = "kata-runtime.toml"
KATA_INSTALL_PATH = Path("/opt/kata/share/kata-containers")
# Kata's slots: the artifact kinds a hypervisor section can name, in order of preference.
SLOTS = ("image", "initrd")


@dataclass(frozen=True)
class FragmentOptions:
    hypervisor: str = setting("qemu", help="the hypervisor section of kata-runtime.toml ([hypervisor.<name>])",
                              metavar="NAME")
    install_path: Path = setting(KATA_INSTALL_PATH, help="where the artifacts will live on the host, for the paths "
                                 f"kata-runtime.toml names (default {KATA_INSTALL_PATH})", metavar="DIR",
                                 parse=as_path)


@dataclass(frozen=True)
class SlotArtifact:
    """What the fragment needs to know of one artifact."""

    kind: str  # "image" or "initrd"
    file_name: str
    fs: str | None = None
    dax: bool = False
    verity_params: str | None = None  # root_hash.txt's line


def choose(artifacts: list[SlotArtifact]) -> SlotArtifact | None:
    """The artifact a runtime boots: the image when there is one (Kata's default), else the initrd."""
    for slot in SLOTS:
        for artifact in artifacts:
            if artifact.kind == slot:
                return artifact
    return None


def render_fragment(artifact: SlotArtifact, options: FragmentOptions, templates: Templates) -> str:
    description = artifact.kind if artifact.kind != "image" else \
        f"{artifact.fs} image, {'DAX' if artifact.dax else 'no DAX'}{', dm-verity' if artifact.verity_params else ''}"
    return templates.render("kata-runtime.toml.j2", osbuilder_version=__version__, file_name=artifact.file_name,
                            description=description, hypervisor=options.hypervisor, slot=artifact.kind,
                            path=str(Path(options.install_path) / artifact.file_name), fs=artifact.fs,
                            dax=artifact.dax, kernel_params=artifact.verity_params)


def fragment_for_report(reports: list, options: FragmentOptions, templates: Templates) -> str:
    """The fragment for inspected artifacts (inspect --runtime-config-fragment)."""
    from osbuilder.errors import UserError

    candidates = []
    for report in reports:
        artifact = report.artifact
        if artifact.kind not in SLOTS:
            continue
        sidecar = (report.layout.get("verity") or {}).get("root_hash_sidecar")
        candidates.append(SlotArtifact(kind=artifact.kind, file_name=artifact.path.name, fs=artifact.fs,
                                       dax=artifact.dax,
                                       verity_params=Path(sidecar).read_text().strip() if sidecar else None))
    chosen = choose(candidates)
    if chosen is None:
        raise UserError("a runtime configuration boots an image or an initrd, and this is neither",
                        "drop --runtime-config-fragment, or inspect an image or initrd")
    return render_fragment(chosen, options, templates)
