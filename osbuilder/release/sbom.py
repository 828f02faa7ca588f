"""The guest's software bill of materials, written through the SPDX and CycloneDX
libraries (never hand-written JSON): every package with its package URL, each artifact with
its sha256, osbuilder as the tool. Reproducible: identifiers and times come from the build's
content and epoch."""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from packageurl import PackageURL

from osbuilder import __version__
from osbuilder.pack.artifact import Artifact
from osbuilder.rootfs.summary import Summary
from osbuilder.foundation.settings import setting

TOOL = "osbuilder"
# How a package --slim emptied is marked: it was installed, its files are gone from the guest.
FILES_REMOVED = "osbuilder:files-removed"
FILES_REMOVED_COMMENT = "installed, then its files were removed by osbuilder --slim"
# Each suite or repository the packages were installed from: "KIND NAME URL".
PACKAGE_SOURCE = "osbuilder:package-source"


def source_lines(summary: Summary) -> list[str]:
    return [f"{source.kind} {source.name} {source.url}" for source in summary.sources]


@dataclass(frozen=True)
class SbomOptions:
    sbom: str | None = setting(None, help="write a software bill of materials beside the artifacts",
                               choices=lambda: SBOM_FORMATS)


@dataclass(frozen=True)
class SbomInput:
    summary: Summary
    artifacts: Sequence[Artifact]
    purl_type: str  # the package manager's package-URL type (deb, rpm, apk)
    epoch: int

    @property
    def identity(self) -> uuid.UUID:
        """Stable for the same guest and artifacts: the document's serial number."""
        digests = ",".join(sorted(a.sha256 for a in self.artifacts))
        return uuid.uuid5(uuid.NAMESPACE_URL, f"osbuilder:{self.summary.distro}:{self.summary.release}:{digests}")

    @property
    def created(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.epoch, datetime.timezone.utc)

    def purl(self, name: str, version: str, arch: str) -> PackageURL:
        return PackageURL(type=self.purl_type, namespace=self.summary.distro, name=name, version=version,
                          qualifiers={"arch": arch, "distro": f"{self.summary.distro}-{self.summary.release}"})


def write_cyclonedx(data: SbomInput, path: Path) -> None:
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.tool import ToolRepository
    from cyclonedx.output.json import JsonV1Dot6

    summary = data.summary
    guest = Component(name=f"{summary.distro}-{summary.release}-guest", version=summary.release,
                      type=ComponentType.OPERATING_SYSTEM, bom_ref="guest",
                      description=f"{summary.distro} {summary.release} sandbox guest, init mode {summary.init_mode}")
    bom = Bom(serial_number=data.identity, metadata=BomMetaData(
        component=guest, timestamp=data.created,
        tools=ToolRepository(components=[Component(name=TOOL, version=__version__, type=ComponentType.APPLICATION)]),
        properties=[Property(name=PACKAGE_SOURCE, value=line) for line in source_lines(summary)]))
    for artifact in data.artifacts:
        bom.components.add(Component(name=artifact.path.name, type=ComponentType.FILE, bom_ref=f"file:{artifact.path.name}",
                                     hashes=[HashType(alg=HashAlgorithm.SHA_256, content=artifact.sha256)]))
    for package in summary.installed:
        purl = data.purl(package.name, package.version, package.architecture)
        bom.components.add(Component(name=package.name, version=package.version, type=ComponentType.LIBRARY,
                                     purl=purl, bom_ref=purl.to_string(),
                                     properties=[Property(name=FILES_REMOVED, value="true")]
                                     if package.files_removed else []))
    bom.register_dependency(guest, list(bom.components))  # the guest holds them all
    path.write_text(JsonV1Dot6(bom).output_as_string(indent=2) + "\n")


def write_spdx(data: SbomInput, path: Path) -> None:
    from spdx_tools.spdx.model import (Actor, ActorType, Checksum, ChecksumAlgorithm, CreationInfo, Document,
                                       ExternalPackageRef, ExternalPackageRefCategory, Package, Relationship,
                                       RelationshipType, SpdxNoAssertion)
    from spdx_tools.spdx.writer.write_anything import write_file

    summary = data.summary
    info = CreationInfo(spdx_version="SPDX-2.3", spdx_id="SPDXRef-DOCUMENT",
                        name=f"{summary.distro}-{summary.release}-guest",
                        document_namespace=f"https://spdx.org/spdxdocs/osbuilder-{data.identity}",
                        creators=[Actor(ActorType.TOOL, f"{TOOL}-{__version__}")], created=data.created,
                        document_comment="".join(f"{PACKAGE_SOURCE}: {line}\n" for line in source_lines(summary)) or None)
    packages, relationships = [], []
    for index, artifact in enumerate(data.artifacts):
        spdx_id = f"SPDXRef-Artifact-{index}"
        packages.append(Package(spdx_id=spdx_id, name=artifact.path.name, file_name=artifact.path.name,
                                download_location=SpdxNoAssertion(), files_analyzed=False,
                                checksums=[Checksum(ChecksumAlgorithm.SHA256, artifact.sha256)]))
        relationships.append(Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, spdx_id))
    for index, package in enumerate(summary.installed):
        spdx_id = f"SPDXRef-Package-{index}"
        purl = data.purl(package.name, package.version, package.architecture).to_string()
        packages.append(Package(spdx_id=spdx_id, name=package.name, version=package.version,
                                download_location=SpdxNoAssertion(), files_analyzed=False,
                                comment=FILES_REMOVED_COMMENT if package.files_removed else None,
                                external_references=[ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER,
                                                                        "purl", purl)]))
        for artifact_index in range(len(data.artifacts)):
            relationships.append(Relationship(f"SPDXRef-Artifact-{artifact_index}", RelationshipType.CONTAINS, spdx_id))
    document = Document(creation_info=info, packages=packages, relationships=relationships)
    write_file(document, str(path), validate=True)


SBOM_FORMATS: dict[str, tuple[str, Callable[[SbomInput, Path], None]]] = {
    "spdx": ("sbom.spdx.json", write_spdx),
    "cyclonedx": ("sbom.cdx.json", write_cyclonedx),
}


def write_sbom(format_name: str, directory: Path, data: SbomInput) -> Path:
    file_name, write = SBOM_FORMATS[format_name]
    path = directory / file_name
    write(data, path)
    return path
