"""Booting artifacts in tests: pack through the CLI, boot under qemu (TCG) with Debian's kernel,
and check the probe's report against what the tree records."""

from __future__ import annotations

import json
from pathlib import Path

from osbuilder.foundation.guest_layout import SUMMARY_PATH
from osbuilder.rootfs.summary import parse_summary
from tests.conftest import run_cli

BOOT_TIMEOUT = 240  # seconds; a systemd guest boots in about 20 s under TCG here


def probe_tree(rootfs, init: str, arch: str = "x86_64") -> Path:
    return rootfs.get(init, arch, None)


def pack(kind: str, tree: Path, out: Path, *options: str) -> Path:
    result = run_cli(kind, tree, "-o", out, *options)
    assert result.returncode == 0, result.stderr
    return out


def boot(artifact: Path, boot_cache: Path, *options: str, timeout: float = BOOT_TIMEOUT):
    result = run_cli("boot", artifact, "--kernel", "debian", "--cache-dir", boot_cache, "--accel", "tcg",
                     "--timeout", str(timeout), "--json", *options, timeout=timeout + 600)
    report = json.loads(result.stdout) if result.stdout.strip().startswith("{") else None
    return result, report


def recorded_init_mode(tree: Path) -> str:
    return parse_summary((tree / SUMMARY_PATH.lstrip("/")).read_text())["agent"]["init-mode"]


def assert_probe(result, report, tree: Path, host_driver: str, arch: str = "x86_64") -> dict:
    assert result.returncode == 0, result.stderr + result.stdout
    assert report["ok"] and report["outcome"] == "matched"
    probe = report["probe"]
    init_mode = recorded_init_mode(tree)
    assert probe["init_mode"] == (init_mode == "agent")
    assert probe["systemd"] == (init_mode == "systemd")
    assert (probe["pid"] == 1) == (init_mode == "agent")
    assert probe["host_cgroup_driver"] == host_driver
    expected = "systemd" if (init_mode == "systemd" and host_driver == "systemd") else "cgroupfs"
    assert probe["cgroup_driver"] == expected
    assert probe["arch"] == arch
    assert 0 < probe["mem_used_kib"] < 1024 * 1024  # what the guest costs in RAM, in a 1 GiB VM
    assert report["recorded_init_mode"] in (init_mode, None)
    return probe


