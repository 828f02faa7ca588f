"""`rootfs --existing DIR`: a tree the user bootstrapped, provisioned as a copy."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_cli
from tests.helpers import fake_bootstrap, snapshot
from tests.http_server import AGENT


def test_an_existing_tree_is_provisioned_as_a_copy(tmp_path: Path):
    """Upstream's no-bootstrap mode: the user's tree is copied, provisioned and validated; the
    original stays as it was."""
    existing = tmp_path / "mine"
    fake_bootstrap(existing, with_systemd=True)
    before = snapshot(existing)
    out = tmp_path / "out"
    result = run_cli("rootfs", "--existing", existing, "--distro", "debian", "--init", "systemd",
                     "--agent", "/bin/busybox", "-o", out, "--json")
    assert result.returncode == 0, result.stderr
    assert snapshot(existing) == before, "the user's tree was changed"
    assert (out / "usr/bin/kata-agent").read_bytes() == AGENT and (out / "etc/resolv.conf").stat().st_size == 0
    summary = (out / "var/lib/osbuilder/osbuilder.yaml").read_text()
    assert "default: []" in summary and 'init-mode: "systemd"' in summary
    refused = run_cli("rootfs", "--existing", existing, "--distro", "debian", "--init", "agent",
                      "--agent", "/bin/busybox", "--extra-packages", "vim", "-o", tmp_path / "no")
    assert refused.returncode == 2 and "--extra-packages does not apply to --existing" in refused.stderr
    assert not (tmp_path / "no").exists()
