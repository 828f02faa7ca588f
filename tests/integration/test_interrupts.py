"""SIGINT and SIGTERM at every step of a build: during the bootstrap (with a cache being
written), mid-download, provisioning, packing the initrd and the image, and a matrix build
with two jobs. Afterwards there is no staging, no partial artifact, no process left
behind, no mount under the test's directory, and the cache holds only whole entries."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from osbuilder.foundation.cache import BuildCache, metadata_digest
from tests.conftest import run_cli
from tests.helpers import WatchedCommand as Build
from tests.helpers import fake_bootstrap, seen
from tests.http_server import AGENT_SHA, Handler

pytestmark = pytest.mark.slow


def assert_nothing_left(work: Path, expected: list[str]) -> None:
    assert sorted(p.name for p in work.iterdir()) == sorted(expected)
    leftover = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True).stdout
    assert leftover == "", "a process outlived the interrupt"
    mounts = Path("/proc/self/mounts").read_text()
    assert str(work) not in mounts


def assert_cache_intact(cache: Path) -> None:
    """Whole entries only: nothing half-written under a temporary name, every tree verified."""
    partial = [p for p in cache.rglob("*.partial")] if cache.exists() else []
    assert partial == [], f"left half-written: {partial}"
    store = BuildCache(cache)
    for entry in store.entries():
        if entry.kind == "bootstrap":
            assert store.unpack_tree(entry.name, lambda tarball: None), f"{entry.name} is not whole"
            recorded = entry.path / "tree.metadata"
            if recorded.exists():  # its unpacked copy, as it was kept
                assert recorded.read_text().strip() == metadata_digest(entry.path / "tree")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_bootstrap_writing_the_cache(tmp_path, agent_x86_64, signum):
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    build = Build("build", "--distro", "debian", "--init", "agent", "--agent", agent_x86_64, "--cache-dir", cache,
                  "--format", "initrd", "-o", work / "out")
    # Mid-download: apt has fetched a first package into its archive cache, and goes on.
    build.wait_for(lambda lines: seen("mmdebstrap: downloading packages")(lines)
                   and any(work.glob(".out.osbuilder-*/rootfs/var/cache/apt/archives/*.deb")))
    log = build.interrupt(signum)
    assert build.proc.returncode == 128 + signum, log  # 130 for SIGINT, 143 for SIGTERM
    assert "osbuilder: error: interrupted" in log
    assert_nothing_left(work, [])
    assert_cache_intact(cache)
    assert BuildCache(cache).entries() == [] or all(e.kind == "packages" for e in BuildCache(cache).entries())


def test_interrupted_agent_download(tmp_path, server):
    work, cache_dir = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    build = Build("build", "--distro", "debian", "--init", "agent", "--agent", f"{server}/slow-agent",
                  "--agent-sha256", AGENT_SHA, "--cache-dir", cache_dir, "--format", "initrd", "-o", work / "out")
    build.wait_for(lambda _: Handler.hits.get("/slow-agent:sent", 0) >= 3)
    log = build.interrupt(signal.SIGTERM)
    assert build.proc.returncode == 143, log
    assert_nothing_left(work, [])
    assert not (cache_dir / "downloads" / AGENT_SHA).exists()
    assert_cache_intact(cache_dir)


@pytest.mark.parametrize("point", ["Provisioning for init mode", "Packing the initrd", "Packing the image"])
def test_interrupted_provisioning_and_packing(tmp_path, agent_x86_64, cache_dir, point):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep").write_text("the user's file")
    build = Build("build", "--distro", "debian", "--init", "systemd", "--agent", agent_x86_64, "--cache-dir",
                  cache_dir, "--format", "initrd,image", "-o", work / "out")
    build.wait_for(seen(point))
    log = build.interrupt(signal.SIGINT)
    assert build.proc.returncode == 130, log
    assert_nothing_left(work, ["keep"])
    assert_cache_intact(cache_dir)


def test_interrupted_matrix_with_two_jobs(tmp_path, agent_x86_64, cache_dir):
    config = tmp_path / "builds.toml"
    config.write_text(f'''
[defaults]
distro = "debian"
agent = "{agent_x86_64}"
format = ["initrd", "image"]

[[target]]
name = "systemd-mode"
init = "systemd"

[[target]]
name = "agent-mode"
init = "agent"

[[target]]
name = "later"
init = "agent"
fs = "erofs"
''')
    work = tmp_path / "work"
    work.mkdir()
    build = Build("build", "--config", config, "--jobs", "2", "--cache-dir", cache_dir, "--json", "-o", work / "out")
    # Two targets running: the systemd one packing, another one started.
    build.wait_for(lambda lines: seen("[systemd-mode] osbuilder: Packing the initrd")(lines)
                   and (seen("[agent-mode] osbuilder:")(lines) or seen("[later] osbuilder:")(lines)))
    log = build.interrupt(signal.SIGTERM)
    assert build.proc.returncode == 143, log
    out = work / "out"
    assert "osbuilder: error: interrupted" in (out / "systemd-mode.log").read_text()
    assert not (out / "systemd-mode").exists()
    # A target that finished before the signal is whole; the others left nothing but their log.
    for directory in (p for p in out.iterdir() if p.is_dir()):
        manifest = json.loads((directory / "manifest.json").read_text())
        assert all((directory / a["file"]).is_file() for a in manifest["artifacts"])
        assert "osbuilder: error" not in (out / f"{directory.name}.log").read_text()
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "staging left behind"
    assert not (out / "matrix.json").exists()
    assert_nothing_left(work, ["out"])
    assert_cache_intact(cache_dir)
    # The cache still serves a whole build afterwards.
    again = run_cli("build", "--config", config, "--target", "agent-mode", "--cache-dir", cache_dir, "--json",
                    "--force", "-o", work / "out")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["artifacts"]


def test_an_interrupted_boot_says_what_it_stopped(tmp_path, boot_cache):
    """Not a build's words: a boot stops its guest and removes its scratch files; nothing of
    qemu is left running."""
    from tests.helpers import make_busybox_probe_guest

    tree = make_busybox_probe_guest(tmp_path / "tree", "x86_64", Path("/bin/busybox"))
    initrd = tmp_path / "probe.initrd"
    assert run_cli("initrd", tree, "-o", initrd).returncode == 0
    boot = Build("boot", initrd, "--kernel", "debian", "--cache-dir", boot_cache, "--accel", "tcg", "-v")
    boot.wait_for(seen("$ qemu-system-x86_64"), timeout=600)
    log = boot.interrupt(signal.SIGINT)
    assert boot.proc.returncode == 130, log
    assert "osbuilder: error: interrupted; the guest was stopped and its scratch files removed" in log
    assert "staging" not in log.splitlines()[-1]
    # qemu is killed as the boot stops (or, at the latest, with osbuilder: its death signal is
    # delivered as osbuilder exits), so it may take a moment to be gone, never longer.
    deadline = time.monotonic() + 5
    while (leftover := subprocess.run(["pgrep", "-f", str(initrd)], capture_output=True, text=True).stdout) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftover == "", "qemu outlived the interrupt"


def _processes_under(path: Path) -> list[str]:
    """Every process whose command line or working directory names `path`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if str(path) in cmdline or cwd.startswith(str(path)):
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def test_sigkill_mid_bootstrap_takes_the_package_manager_along_and_the_next_build_cleans_up(tmp_path, agent_x86_64):
    """SIGKILL leaves osbuilder no time to clean up: its children die with it (none keeps
    running dpkg in the orphaned staging), and the next build into the same output removes
    that staging, whose owner is gone."""
    import time

    work = tmp_path / "work"
    work.mkdir()
    build = Build("build", "--distro", "debian", "--init", "agent", "--agent", agent_x86_64, "--no-cache",
                  "--format", "initrd", "-o", work / "out")
    build.wait_for(seen("mmdebstrap: installing"), timeout=600)
    [staging] = list(work.glob(".out.osbuilder-*"))
    build.proc.kill()
    build.proc.wait(timeout=30)
    deadline = time.monotonic() + 20
    while _processes_under(staging) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_under(staging) == [], "a child outlived the SIGKILL"
    assert staging.exists()  # nothing could remove it
    tree = tmp_path / "tree"
    fake_bootstrap(tree, with_systemd=False)
    shutil.copy("/bin/busybox", tree / "usr/bin/sh")
    again = run_cli("build", "--distro", "debian", "--init", "agent", "--probe-agent", "--existing", tree,
                    "-o", work / "out")
    assert again.returncode == 0, again.stderr
    assert f"removing {staging}, left by a build that is gone" in again.stderr
    assert sorted(p.name for p in work.iterdir()) == ["out"]
