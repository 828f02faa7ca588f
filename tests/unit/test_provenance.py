"""--provenance: an in-toto v1 statement with an SLSA v1 provenance predicate, validated
against the schemas in tests/data (written for these tests from the published in-toto
attestation and SLSA v1.0 specifications). Real builds of a small tree, and the release
tarballs of the kata layout as subjects."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import jsonschema

from tests.conftest import run_cli
from tests.helpers import fake_bootstrap

DATA = Path(__file__).resolve().parent.parent / "data"
EPOCH = "1650000000"


def schema(name: str) -> jsonschema.Draft202012Validator:
    loaded = json.loads((DATA / name).read_text())
    jsonschema.Draft202012Validator.check_schema(loaded)
    return jsonschema.Draft202012Validator(loaded)


def small_tree(root: Path) -> Path:
    fake_bootstrap(root, with_systemd=False)
    shutil.copy("/bin/busybox", root / "usr/bin/sh")
    return root


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(tree: Path, out: Path, *extra: str) -> dict:
    result = run_cli("--json", "build", "--distro", "debian", "--init", "agent", "--probe-agent", "--existing", tree,
                     "--format", "initrd", "--source-date-epoch", EPOCH, "--provenance", "-o", out, *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_statement_is_valid_in_toto_and_slsa_and_names_every_artifact(tmp_path):
    tree = small_tree(tmp_path / "tree")
    out = tmp_path / "out"
    printed = build(tree, out, "--layout", "kata", "--tarball")
    path = out / "provenance.intoto.json"
    statement = json.loads(path.read_text())
    schema("in-toto-statement-v1.schema.json").validate(statement)
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    schema("slsa-provenance-v1.schema.json").validate(statement["predicate"])

    # The digest printed (and in --json) is the file's: what a signer signs.
    assert printed["provenance"] == {"path": str(path), "sha256": sha256(path)}
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    # The image by its real name (kata-containers-initrd.img links to it) and the tarball that ships it.
    assert set(subjects) == {"opt/kata/share/kata-containers/kata-debian-bookworm.initrd",
                             "kata-static-rootfs-initrd.tar.zst"}
    for name, digest in subjects.items():
        assert sha256(out / name) == digest, name
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(subjects) >= {a["file"] for a in manifest["artifacts"]}
    assert {"file": "provenance.intoto.json", "kind": "provenance", "sha256": sha256(path)} in manifest["sidecars"]

    definition = statement["predicate"]["buildDefinition"]
    assert "--provenance" in definition["externalParameters"]["command"]
    assert definition["externalParameters"]["settings"]["output"] == "."
    assert definition["internalParameters"]["source_date_epoch"] == int(EPOCH)
    names = {d["name"] for d in definition["resolvedDependencies"]}
    assert "recipe:debian.toml" in names and any(n.startswith("agent:") for n in names)
    recipe = next(d for d in definition["resolvedDependencies"] if d["name"] == "recipe:debian.toml")
    assert recipe["digest"]["sha256"] == sha256(Path(__file__).resolve().parents[2] / "distros/debian.toml")
    builder = statement["predicate"]["runDetails"]["builder"]
    assert builder["id"] == "urn:osbuilder:builder" and builder["version"]["osbuilder"]
    assert "startedOn" not in json.dumps(statement)  # no clock: the same build, the same statement


def test_payloads_are_materials_and_two_builds_differ_only_in_the_command(tmp_path):
    tree = small_tree(tmp_path / "tree")
    overlay = tmp_path / "overlay"
    (overlay / "etc").mkdir(parents=True)
    (overlay / "etc/motd").write_text("hello\n")
    build(tree, tmp_path / "one", "--overlay", overlay)
    (tmp_path / "far").mkdir()
    build(tree, tmp_path / "far" / "two", "--overlay", overlay)
    manifest = json.loads((tmp_path / "one/manifest.json").read_text())
    first = json.loads((tmp_path / "one/provenance.intoto.json").read_text())
    second = json.loads((tmp_path / "far/two/provenance.intoto.json").read_text())
    dependencies = first["predicate"]["buildDefinition"]["resolvedDependencies"]
    payloads = [d for d in dependencies if d["name"].startswith("payload:")]
    assert [(d["name"], d["digest"]["sha256"]) for d in payloads] == [
        (f"payload:{p['name']}:{p['source']}", p["sha256"]) for p in manifest["payloads"]]
    assert payloads[0]["name"].startswith("payload:overlay:")
    for statement in (first, second):
        statement["predicate"]["buildDefinition"]["externalParameters"].pop("command")
    assert first == second


def test_without_the_flag_nothing_is_written(tmp_path):
    tree = small_tree(tmp_path / "tree")
    result = run_cli("--json", "build", "--distro", "debian", "--init", "agent", "--probe-agent", "--existing",
                     tree, "--format", "initrd", "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["provenance"] is None
    assert not (tmp_path / "out/provenance.intoto.json").exists()
