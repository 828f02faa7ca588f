"""The SBOM (validated by the same libraries that write it) and manifest.json (validated
against its versioned JSON Schema in schemas/)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from osbuilder.pack.artifact import Artifact
from osbuilder.pack.image import ImageDetails
from osbuilder.rootfs.backends import Package
from osbuilder.rootfs.summary import Summary
from osbuilder.release.sbom import SbomInput, write_sbom
from tests.helpers import validate_manifest

PACKAGES = (Package("base-files", "12.4+deb12u5", "amd64"), Package("dbus", "1.14.10-1~deb12u1", "amd64"),
            Package("libc6", "2.36-9+deb12u4", "amd64"))


def sbom_input(tmp_path: Path) -> SbomInput:
    summary = Summary("x86_64", "debian", "bookworm", ("dbus",), (), "systemd", "file:kata-agent", "3.2.0",
                      "ab" * 32, 1700000000, installed=PACKAGES)
    image = tmp_path / "kata-containers.img"
    image.write_bytes(b"image")
    artifact = Artifact(path=image, format="image", size=5,
                        details=ImageDetails(init_mode="systemd", fs="ext4", dax=True, fs_uuid="0" * 32,
                                             partition_offset=2 << 20, alignment=128 << 20)).digested()
    return SbomInput(summary, [artifact], "deb", 1700000000)


def test_spdx_sbom_validates_with_spdx_tools(tmp_path: Path):
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    data = sbom_input(tmp_path)
    path = write_sbom("spdx", tmp_path, data)
    assert path.name == "sbom.spdx.json"
    document = parse_file(str(path))
    assert validate_full_spdx_document(document) == []
    purls = sorted(ref.locator for p in document.packages for ref in p.external_references)
    assert purls == ["pkg:deb/debian/base-files@12.4%2Bdeb12u5?arch=amd64&distro=debian-bookworm",
                     "pkg:deb/debian/dbus@1.14.10-1~deb12u1?arch=amd64&distro=debian-bookworm",
                     "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-bookworm"]
    (artifact,) = [p for p in document.packages if p.name == "kata-containers.img"]
    assert artifact.checksums[0].value == data.artifacts[0].sha256
    assert [c.name for c in document.creation_info.creators] == ["osbuilder-0.1.0"]
    first = path.read_bytes()
    assert write_sbom("spdx", tmp_path, data).read_bytes() == first, "the SBOM is not reproducible"


def test_cyclonedx_sbom_validates_with_cyclonedx_lib(tmp_path: Path):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    data = sbom_input(tmp_path)
    path = write_sbom("cyclonedx", tmp_path, data)
    text = path.read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    bom = json.loads(text)
    libraries = {c["name"]: c for c in bom["components"] if c["type"] == "library"}
    assert libraries["dbus"]["purl"] == "pkg:deb/debian/dbus@1.14.10-1~deb12u1?arch=amd64&distro=debian-bookworm"
    (file,) = [c for c in bom["components"] if c["type"] == "file"]
    assert file["hashes"] == [{"alg": "SHA-256", "content": data.artifacts[0].sha256}]
    assert bom["metadata"]["tools"]["components"][0]["name"] == "osbuilder"
    assert bom["metadata"]["timestamp"].startswith("2023-11-14T22:13:20")
    assert write_sbom("cyclonedx", tmp_path, data).read_text() == text, "the SBOM is not reproducible"


def test_manifests_validate_and_the_schema_catches_mistakes(tmp_path: Path):
    from osbuilder.config import make_config
    from osbuilder.pack.manifest import write_manifest

    from osbuilder.rootfs.payloads import PayloadRecord

    data = sbom_input(tmp_path)
    data = dataclasses.replace(data, summary=dataclasses.replace(
        data.summary, payloads=(PayloadRecord("guest_hooks", "hooks.tar", "cd" * 32),)))
    config, _ = make_config({"distro": "debian", "init": "systemd", "agent": Path("/bin/busybox"),
                             "formats": ("image",), "output": tmp_path / "out"})
    sidecar = tmp_path / "root_hash.txt"
    sidecar.write_text("root_hash=00\n")
    path = tmp_path / "manifest.json"
    write_manifest(path, config.as_json(), data.summary, data.artifacts, 1700000000, [(sidecar, "root_hash.txt")])
    manifest = validate_manifest(path)
    assert manifest["packages"][1] == {"name": "dbus", "version": "1.14.10-1~deb12u1", "architecture": "amd64"}
    assert manifest["payloads"] == [{"name": "guest_hooks", "source": "hooks.tar", "sha256": "cd" * 32}]
    for broken in ({"init_mode": "pid1"}, {"cgroup_driver": "systemd"}, {"manifest_version": 2},
                   {"artifacts": [{"file": "a/b"}]}, {"packages": [{"name": "x"}]}):
        path.write_text(json.dumps({**manifest, **broken}))
        with pytest.raises(Exception) as err:
            validate_manifest(path)
        assert type(err.value).__name__ == "ValidationError"
    missing = dict(manifest)
    del missing["agent"]
    path.write_text(json.dumps(missing))
    with pytest.raises(Exception, match="'agent' is a required property"):
        validate_manifest(path)
