"""Agent downloads from a real HTTP server on 127.0.0.1: pinned, retried where it helps,
bounded in time, cached by digest, and never left half-written."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from osbuilder.foundation.errors import BuildError, UserError
from osbuilder.foundation.fetch import FetchPolicy, fetch
from tests.conftest import run_cli

from tests.http_server import AGENT, AGENT_SHA, Handler

FAST = FetchPolicy(connect_timeout=2, read_timeout=0.5, attempts=3, backoff=0.01)


def test_a_pinned_download_is_verified_and_cached(server, tmp_path: Path):
    cache = tmp_path / "cache"
    got = fetch(f"{server}/agent", AGENT_SHA, tmp_path / "one", cache, FAST)
    assert got.read_bytes() == AGENT and (cache / "downloads" / AGENT_SHA).read_bytes() == AGENT
    again = fetch(f"{server}/agent", AGENT_SHA.upper(), tmp_path / "two", cache, FAST)
    assert again.read_bytes() == AGENT and Handler.hits["/agent"] == 1, "the cache was not used"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "one", "two"]


def test_a_digest_mismatch_is_refused_and_leaves_nothing(server, tmp_path: Path):
    with pytest.raises(UserError, match="not the pinned"):
        fetch(f"{server}/wrong", AGENT_SHA, tmp_path / "agent", tmp_path / "cache", FAST)
    assert [p.name for p in tmp_path.iterdir()] == []


def test_4xx_is_not_retried_and_5xx_is(server, tmp_path: Path):
    with pytest.raises(UserError, match="HTTP 404"):
        fetch(f"{server}/missing", AGENT_SHA, tmp_path / "a", policy=FAST)
    assert Handler.hits["/missing"] == 1
    got = fetch(f"{server}/flaky", AGENT_SHA, tmp_path / "b", policy=FAST)
    assert got.read_bytes() == AGENT and Handler.hits["/flaky"] == 3


def test_a_stalled_server_times_out_within_bounds(server, tmp_path: Path):
    began = time.monotonic()
    with pytest.raises(BuildError, match="after 3 attempts"):
        fetch(f"{server}/stall", AGENT_SHA, tmp_path / "a", policy=FAST)
    assert time.monotonic() - began < 3 * (0.5 + 0.5) + 2
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_body_is_an_error_not_an_agent(server, tmp_path: Path):
    with pytest.raises(BuildError, match="failed after 3 attempts"):
        fetch(f"{server}/truncated", None, tmp_path / "a", policy=FAST)
    assert list(tmp_path.iterdir()) == [] and Handler.hits["/truncated"] == 3


def test_rootfs_refuses_a_wrong_agent_download_before_building(server, tmp_path: Path):
    out = tmp_path / "work"
    out.mkdir()
    result = run_cli("rootfs", "--distro", "debian", "--init", "agent", "--agent", f"{server}/wrong",
                     "--agent-sha256", AGENT_SHA, "-o", out / "rootfs")
    assert result.returncode == 2, result.stderr
    assert "not the pinned" in result.stderr and "Traceback" not in result.stderr
    assert list(out.iterdir()) == [], "staging was left behind"
    unpinned = run_cli("rootfs", "--distro", "debian", "--init", "agent", "--agent", f"{server}/missing",
                       "-o", out / "rootfs")
    assert unpinned.returncode == 2 and "is not pinned" in unpinned.stderr and "HTTP 404" in unpinned.stderr
    local = run_cli("rootfs", "--distro", "debian", "--init", "agent", "--agent", "/bin/busybox",
                    "--agent-sha256", "0" * 64, "-o", out / "rootfs")
    assert local.returncode == 2 and "not the pinned" in local.stderr
    assert list(out.iterdir()) == []


def test_the_proxy_comes_from_the_environment(server, tmp_path: Path, monkeypatch):
    """osbuilder.invalid cannot resolve: only the proxy HTTP_PROXY names can answer."""
    monkeypatch.setenv("HTTP_PROXY", server)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    got = fetch("http://osbuilder.invalid/agent", AGENT_SHA, tmp_path / "agent", policy=FAST)
    assert got.read_bytes() == AGENT and Handler.hits == {"/agent": 1}


def test_large_downloads_report_their_progress(server, tmp_path: Path, caplog):
    import hashlib
    import io
    import logging

    from osbuilder.foundation.progress import progress_for
    from tests.http_server import BIG

    caplog.set_level(logging.INFO, logger="osbuilder")
    with progress_for(io.StringIO()) as progress:
        fetch(f"{server}/big", hashlib.sha256(BIG).hexdigest(), tmp_path / "big", policy=FAST, progress=progress)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("download:")]
    assert lines[:2] == ["download: big: 8.0 of 20.0 MiB", "download: big: 16.0 of 20.0 MiB"]
