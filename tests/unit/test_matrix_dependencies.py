"""Matrix targets that read each other's artifacts: a base whose `with-extension` names an
extension target, an extension whose `base` names a base target. The matrix builds what is
read first, resolves the name to where that target's build puts its image, skips a target
whose input failed, and refuses cycles and references to what cannot be read. Real builds of
small trees (no bootstrap), real mkfs.erofs and veritysetup."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from osbuilder.foundation.errors import UserError
from osbuilder.matrix import dependency_order
from tests.conftest import run_cli
from tests.helpers import fake_bootstrap
from tests.unit.test_extensions import extension_tree

SHARE = "opt/kata/share/kata-containers"


def composed_matrix(tmp_path: Path, extension_source: str | None = None) -> Path:
    """A base listed first that names an extension listed after it, in the kata layout."""
    base = tmp_path / "base-tree"
    fake_bootstrap(base, with_systemd=True)
    extension = extension_tree(tmp_path / "extension-tree")
    config = tmp_path / "composed.toml"
    config.write_text(f'''
[defaults]
distro = "debian"
layout = "kata"

[[target]]
name = "base"
init = "systemd"
probe-agent = true
existing = "{base}"
format = ["image"]
fs = "erofs"
dax = false
with-extension = ["coco=coco-extension"]

[[target]]
name = "coco-extension"
init = "none"
extension = "coco"
existing = "{extension_source or extension}"
''')
    return config


def test_the_base_is_built_after_the_extension_it_names(tmp_path):
    config = composed_matrix(tmp_path)
    printed = run_cli("matrix", "--config", config, "--github", "-o", "out")
    assert printed.returncode == 0, printed.stderr
    assert {job["name"]: job["needs"] for job in json.loads(printed.stdout)["include"]} == {
        "base": ["coco-extension"], "coco-extension": []}
    out = tmp_path / "out"
    built = run_cli("build", "--config", config, "-o", out, "--jobs", "2", "--json")
    assert built.returncode == 0, built.stderr + built.stdout
    runs = {t["name"]: t for t in json.loads(built.stdout)["targets"]}
    assert runs["base"]["status"] == runs["coco-extension"]["status"] == "ok"
    # The base's fragment names the extension by the link its build made, with its root hash.
    fragment = tomllib.loads((out / "base" / "kata-runtime.toml").read_text())["hypervisor"]["qemu"]
    params = (out / "coco-extension" / SHARE / "root_hash_coco-extension.txt").read_text().strip()
    assert fragment["guest_extension_images"] == [
        {"name": "coco", "path": f"/{SHARE}/kata-containers-coco-extension.img", "verity_params": params}]
    assert fragment["image"] == f"/{SHARE}/kata-containers.img"
    # The job for the base alone, as a pipeline runs it once the extension's output is in place.
    again = run_cli("build", "--config", config, "--target", "base", "-o", out, "--force")
    assert again.returncode == 0, again.stderr


def test_a_target_whose_input_failed_is_skipped(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "sbin").mkdir()
    (broken / "sbin/init").write_text("#!/bin/sh\n")  # an extension may hold no init: its build fails
    config = composed_matrix(tmp_path, extension_source=str(broken))
    built = run_cli("build", "--config", config, "-o", tmp_path / "out", "--jobs", "2", "--json")
    assert built.returncode == 1
    runs = {t["name"]: t for t in json.loads(built.stdout)["targets"]}
    assert runs["coco-extension"]["status"] == "failed"
    assert runs["base"]["status"] == "skipped" and "'coco-extension'" in runs["base"]["error"]
    assert not (tmp_path / "out" / "base").exists()


@pytest.mark.parametrize("edit, words", [
    (lambda t: t.replace('extension = "coco"\n', 'extension = "coco"\nbase = "base"\n'),
     "in a cycle (base -> coco-extension -> base)"),
    (lambda t: t.replace('"coco=coco-extension"', '"coco=base"'), "target 'base' names itself in with-extension"),
    (lambda t: t.replace('init = "none"\nextension = "coco"\n', 'init = "agent"\nprobe-agent = true\n'),
     "target 'coco-extension' is not an extension image"),
])
def test_references_that_cannot_be_built_are_refused_before_any_build(tmp_path, edit, words):
    config = composed_matrix(tmp_path)
    config.write_text(edit(config.read_text()))
    for command in (("matrix", "--config", config), ("build", "--config", config, "-o", tmp_path / "out")):
        result = run_cli(*command)
        assert result.returncode == 2 and words in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_dependency_order_keeps_the_given_order_otherwise():
    depends = {"a": ("c",), "b": (), "c": (), "d": ("a", "b")}
    assert dependency_order(["a", "b", "c", "d"], depends, Path("m.toml")) == ["c", "a", "b", "d"]
    assert dependency_order(["b", "c", "a", "d"], depends, Path("m.toml")) == ["b", "c", "a", "d"]
    with pytest.raises(UserError, match=r"cycle \(a -> c -> a\)"):
        dependency_order(["a", "c"], {"a": ("c",), "c": ("a",)}, Path("m.toml"))
