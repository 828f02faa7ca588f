"""Build matrices: `osbuilder build --config builds.toml` with [[target]] tables, a job pool
sharing the cache, per-target logs and manifests, failures that stop only their target
(or all, with --fail-fast), and `osbuilder matrix --github` commands that rebuild the same
bytes on their own. Alpine installs from a local repository (its mirror is out of reach)."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from tests.local_repos.apk import served_alpine_repo

pytestmark = pytest.mark.slow
EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}


@pytest.fixture(scope="module")
def apk_repo(tmp_path_factory, cache_dir):
    with served_alpine_repo(tmp_path_factory.mktemp("apk-matrix"), cache_dir, ("x86_64", "aarch64")) as (_, url, key):
        yield url, key


def write_matrix(path: Path, url: str, keyring: Path, *targets: str) -> Path:
    path.write_text(f'''
[defaults]
distro = "alpine"
init = "agent"
probe-agent = true
mirror = "{url}"
keyring = "{keyring}"
format = ["initrd"]
''' + "".join(targets))
    return path


GOOD = '''
[[target]]
name = "alpine-x86_64"
arch = "x86_64"

[[target]]
name = "alpine-aarch64-erofs"
arch = "aarch64"
format = ["initrd", "image"]
fs = "erofs"
'''
BROKEN = '''
[[target]]
name = "unreachable-mirror"
arch = "x86_64"
mirror = "http://127.0.0.1:9"
'''


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_matrix_builds_every_target_and_reports_each(apk_repo, tmp_path):
    url, keyring = apk_repo
    config = write_matrix(tmp_path / "builds.toml", url, keyring, GOOD, BROKEN)
    out = tmp_path / "out"
    result = run_cli("build", "--config", config, "-o", out, "--jobs", "2", "--cache-dir", tmp_path / "cache",
                     "--json", env=EPOCH)
    assert result.returncode == 1, result.stderr  # one target failed
    report = json.loads(result.stdout)
    status = {t["name"]: t["status"] for t in report["targets"]}
    assert status == {"alpine-x86_64": "ok", "alpine-aarch64-erofs": "ok", "unreachable-mirror": "failed"}
    assert report["failed"] == 1
    assert json.loads((out / "matrix.json").read_text()) == report
    failed = next(t for t in report["targets"] if t["name"] == "unreachable-mirror")
    assert "127.0.0.1:9" in failed["error"]
    # Each target: its artifacts and manifest in OUT/NAME, its log beside them.
    assert sorted(p.name for p in out.iterdir()) == [
        "alpine-aarch64-erofs", "alpine-aarch64-erofs.log", "alpine-x86_64", "alpine-x86_64.log", "matrix.json",
        "unreachable-mirror.log"]
    manifest = json.loads((out / "alpine-aarch64-erofs" / "manifest.json").read_text())
    assert manifest["architecture"] == "aarch64"
    assert sorted(a["format"] for a in manifest["artifacts"]) == ["image", "initrd"]
    assert manifest["config"]["fs"] == "erofs" and manifest["config"]["arch"] == "aarch64"
    log = (out / "alpine-x86_64.log").read_text()
    assert log.startswith("$ osbuilder build --config ")
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d osbuilder: Bootstrapping alpine 3.22 for x86_64\.\.\.$", log, re.M)
    assert "osbuilder: error:" in (out / "unreachable-mirror.log").read_text()
    # Not a terminal: plain timestamped lines naming the target, then the summary table.
    assert re.search(r"^\d\d:\d\d:\d\d \[alpine-x86_64\] osbuilder: Packing the initrd\.\.\.$", result.stderr, re.M)
    table = run_cli("build", "--config", config, "-o", tmp_path / "again", "--cache-dir", tmp_path / "cache",
                    "-q", env=EPOCH)
    assert table.returncode == 1 and table.stderr == ""
    assert re.search(r"^alpine-x86_64\s+ok\s+[\d.]+s\s+kata-containers-initrd\.img$", table.stdout, re.M)
    assert "2 of 3 target(s) built" in table.stdout


def test_fail_fast_stops_the_other_targets(apk_repo, tmp_path):
    url, keyring = apk_repo
    config = write_matrix(tmp_path / "builds.toml", url, keyring, BROKEN, GOOD)
    result = run_cli("build", "--config", config, "-o", tmp_path / "out", "--fail-fast", "--json",
                     "--cache-dir", tmp_path / "cache")
    assert result.returncode == 1
    status = [t["status"] for t in json.loads(result.stdout)["targets"]]
    assert status == ["failed", "skipped", "skipped"]
    assert not (tmp_path / "out" / "alpine-x86_64").exists()


def test_github_matrix_commands_rebuild_the_same_artifacts(apk_repo, tmp_path):
    url, keyring = apk_repo
    config = write_matrix(tmp_path / "builds.toml", url, keyring, GOOD)
    listed = run_cli("matrix", "--config", config, "--github", "-o", "dist")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("\n") == 1  # one line, for $GITHUB_OUTPUT
    include = json.loads(listed.stdout)["include"]
    assert [(e["name"], e["arch"], e["format"]) for e in include] == [
        ("alpine-x86_64", "x86_64", "initrd"), ("alpine-aarch64-erofs", "aarch64", "initrd,image")]
    assert include[0]["command"] == f"osbuilder build --config {config} --target alpine-x86_64 -o dist"
    matrix = run_cli("build", "--config", config, "-o", tmp_path / "matrix", "--jobs", "2", "--json", env=EPOCH)
    assert matrix.returncode == 0, matrix.stderr
    for entry in include:  # as separate runners would, each with its own cache
        argv = shlex.split(entry["command"])
        assert argv[0] == "osbuilder"
        runner = tmp_path / f"runner-{entry['name']}"
        runner.mkdir()
        done = subprocess.run([sys.executable, "-m", "osbuilder", *argv[1:], "--cache-dir", str(runner / "cache")],
                              cwd=runner, capture_output=True, text=True, env={**__import__("os").environ, **EPOCH,
                                                                              "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stderr
        built = runner / "dist" / entry["name"]
        ours = tmp_path / "matrix" / entry["name"]
        files = sorted(p.name for p in ours.iterdir() if p.name.startswith("kata-containers"))
        assert files and files == sorted(p.name for p in built.iterdir() if p.name.startswith("kata-containers"))
        for name in files:
            assert sha256(built / name) == sha256(ours / name), name


@pytest.mark.parametrize("body, message", [
    ('\n[[target]]\narch = "x86_64"\n', "target 1 needs a name"),
    ('\n[[target]]\nname = "a"\n[[target]]\nname = "a"\n', "two targets are named 'a'"),
    ('\n[[target]]\nname = "a/b"\n', "target 1 needs a name"),
    ('\n[[target]]\nname = "a"\nfs = "ntfs"\n', "(target 'a'): key 'fs': 'ntfs' is not one of"),
    ('\n[[target]]\nname = "a"\narch = "riscv64"\n', "(target 'a'): key 'arch'"),
    ('\ndistro = "debian"\n[[target]]\nname = "a"\n', "unknown key 'distro' beside [[target]] tables"),
])
def test_a_bad_matrix_file_is_refused_before_any_build(apk_repo, tmp_path, body, message):
    url, keyring = apk_repo
    config = tmp_path / "builds.toml"
    config.write_text(body if body.startswith("\ndistro") else write_matrix(config, url, keyring).read_text() + body)
    result = run_cli("build", "--config", config, "-o", tmp_path / "out")
    assert result.returncode == 2, result.stderr
    assert len(result.error_lines) == 1 and message in result.error_lines[0], result.error_lines
    assert not (tmp_path / "out").exists()


def test_matrix_flags_need_a_matrix_file(tmp_path):
    for flag in (["--jobs", "2"], ["--fail-fast"], ["--target", "x"]):
        result = run_cli("build", "--distro", "debian", "--probe-agent", *flag, "-o", tmp_path / "out")
        assert result.returncode == 2
        assert result.error_lines == [f"osbuilder: error: {flag[0]} applies to a --config file of [[target]] "
                                      f"tables; drop {flag[0]}"]


def test_an_unknown_target_is_refused(apk_repo, tmp_path):
    url, keyring = apk_repo
    config = write_matrix(tmp_path / "builds.toml", url, keyring, GOOD)
    result = run_cli("build", "--config", config, "--target", "nope", "-o", tmp_path / "out")
    assert result.returncode == 2
    assert result.error_lines == [f"osbuilder: error: config file {config} has no target 'nope'; use one of: "
                                  "alpine-x86_64, alpine-aarch64-erofs"]


def test_on_a_terminal_the_matrix_shows_one_live_line_per_target(apk_repo, tmp_path):
    """Run under a pseudo-terminal (util-linux script): rich's live table, not log lines."""
    url, keyring = apk_repo
    config = write_matrix(tmp_path / "builds.toml", url, keyring, GOOD)
    command = shlex.join([sys.executable, "-m", "osbuilder", "build", "--config", str(config), "-o",
                          str(tmp_path / "out"), "--jobs", "2", "--cache-dir", str(tmp_path / "cache")])
    shown = subprocess.run(["script", "--quiet", "--return", "--command", command, "/dev/null"], cwd=REPO,
                           capture_output=True, text=True, timeout=600, env={**__import__("os").environ,
                                                                             "COLUMNS": "120", "TERM": "xterm"})
    assert shown.returncode == 0, shown.stdout[-3000:]
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.stdout)
    assert re.search(r"alpine-x86_64\s+(running|ok)\s+\d+ s", screen), screen[-3000:]
    assert "[alpine-x86_64] osbuilder:" not in screen  # no log lines on a terminal
    assert re.search(r"^alpine-aarch64-erofs\s+ok\s+[\d.]+s\s+kata-containers-initrd\.img, kata-containers\.img",
                     screen, re.M)


def test_no_target_starts_after_a_fail_fast_stop(tmp_path, server):
    """The race the review found: a target that checked the stop flag before a fail-fast stop
    but registered its build after it was never terminated. The slow target's first check
    is held until the stop has terminated every registered build (at most 3 s), the
    interleaving in which a check made outside the registering lock goes stale."""
    import io
    import threading

    from osbuilder.matrix import MatrixBuild, MatrixDisplay, load_matrix
    from tests.helpers import fake_bootstrap

    existing = tmp_path / "tree"
    fake_bootstrap(existing, with_systemd=False)
    config = tmp_path / "builds.toml"
    config.write_text(f'''
[defaults]
distro = "debian"
init = "agent"
existing = "{existing}"
format = ["initrd"]

[[target]]
name = "fails"
agent = "{server}/missing"

[[target]]
name = "slow"
agent = "{server}/slow-agent"
''')
    terminated = threading.Event()
    current = threading.local()
    held = []

    class HeldCheck(threading.Event):
        def is_set(self) -> bool:
            value = super().is_set()
            if getattr(current, "name", None) == "slow" and not held:
                held.append(value)
                terminated.wait(3)
            return value

    class Observed(MatrixBuild):
        def _build(self, run) -> None:
            current.name = run.name
            super()._build(run)

        def _terminate_all(self) -> None:
            super()._terminate_all()
            terminated.set()

    build = Observed(load_matrix(config), tmp_path / "out", 2, True, [],
                     lambda runs: MatrixDisplay(io.StringIO(), runs, enabled=False))
    build.stop = HeldCheck()
    runs = {run.name: run for run in build.run()}
    assert held == [False], "the slow target's check was never held"
    assert runs["fails"].state == "failed" and "404" in runs["fails"].error, runs["fails"]
    assert runs["slow"].state in ("skipped", "cancelled"), f"the slow target went on building: {runs['slow']}"
