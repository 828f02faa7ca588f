"""Reproducible with no flag: the epoch comes from the inputs (never the clock), the flag
--source-date-epoch sets it, and manifest.json does not depend on the output directory.
Real builds of small trees; the package indexes' dates are tested where their builds run
(tests/integration/test_reproducible_indexes.py)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

from tests.conftest import run_cli
from tests.helpers import fake_bootstrap

NEWEST = 1_650_000_000  # the newest time the test's tree records


def dated_tree(root: Path) -> Path:
    fake_bootstrap(root, with_systemd=False)
    shutil.copy("/bin/busybox", root / "usr/bin/sh")
    for path in [root, *root.rglob("*")]:
        os.utime(path, (NEWEST - 1000, NEWEST - 1000), follow_symlinks=False)
    os.utime(root / "etc/chrony/chrony.conf", (NEWEST, NEWEST))
    return root


def build(tree: Path, out: Path, *extra: str, env: dict[str, str] | None = None) -> dict:
    result = run_cli("build", "--distro", "debian", "--init", "agent", "--probe-agent", "--existing", tree,
                     "--format", "initrd", "-o", out, *extra, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads((out / "manifest.json").read_text())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_builds_of_the_same_tree_give_the_same_bytes_with_no_flag(tmp_path):
    tree = dated_tree(tmp_path / "tree")
    first = build(tree, tmp_path / "one")
    (tmp_path / "elsewhere").mkdir()
    build(tree, tmp_path / "elsewhere" / "two")
    assert first["source_date_epoch"] == NEWEST  # the tree's newest time, not the clock
    assert sha256(tmp_path / "one/kata-containers-initrd.img") == sha256(
        tmp_path / "elsewhere/two/kata-containers-initrd.img")
    # manifest.json records its output as itself, so two directories give the same manifest.
    assert first["config"]["output"] == "."
    assert (tmp_path / "one/manifest.json").read_bytes() == (tmp_path / "elsewhere/two/manifest.json").read_bytes()


def test_the_flag_sets_the_epoch_and_wins_over_the_environment(tmp_path):
    tree = dated_tree(tmp_path / "tree")
    manifest = build(tree, tmp_path / "out", "--source-date-epoch", "1600000000",
                     env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert manifest["source_date_epoch"] == 1600000000
    inspected = json.loads(run_cli("inspect", tmp_path / "out/kata-containers-initrd.img", "--json").stdout)
    assert inspected["builder"]["value"]["created"] == "2020-09-13T12:26:40Z"
    assert build(tree, tmp_path / "env", env={"SOURCE_DATE_EPOCH": "1700000000"})["source_date_epoch"] == 1700000000
    refused = run_cli("build", "--distro", "debian", "--init", "agent", "--probe-agent", "--existing", tree,
                      "--source-date-epoch", "yesterday", "-o", tmp_path / "bad")
    assert refused.returncode == 2 and "--source-date-epoch" in refused.stderr
    assert not (tmp_path / "bad").exists()


def test_an_empty_extension_takes_its_payloads_time(tmp_path):
    components = tmp_path / "coco.tar"
    with tarfile.open(components, "w") as tar:
        for name, data, when in (("./etc/ocicrypt_config.json", b"{}\n", 1_600_000_000),
                                 ("./etc/coco/agent.toml", b"x = 1\n", 1_610_000_000)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), when
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "out"
    result = run_cli("build", "--distro", "debian", "--init", "none", "--extension", "coco", "--coco-components",
                     components, "-o", out)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "manifest.json").read_text())["source_date_epoch"] == 1_610_000_000
