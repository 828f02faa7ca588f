"""setup.sh as a user runs it: silent when all is well, and `--runtime` installs osbuilder
without the test suite's tools. Runs on a copy of the checkout (a fresh venv, real pip
against PyPI); the Debian packages are the machine's (setup.sh installs what is missing)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def checkout_copy(into: Path) -> Path:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)
    return into


@pytest.mark.slow
def test_setup_runtime_is_silent_and_installs_no_test_tools(tmp_path):
    copy = checkout_copy(tmp_path / "osbuilder")
    result = subprocess.run(["./setup.sh", "--runtime"], cwd=copy, capture_output=True, text=True, timeout=900,
                            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    # Nothing but the one line: no setuptools warnings about package data or editable installs.
    assert (result.stdout + result.stderr) == "setup: ready (.venv/bin/osbuilder)\n"
    venv = copy / ".venv/bin"
    assert (venv / "osbuilder").is_file() and not (venv / "pytest").exists()
    listed = subprocess.run([venv / "osbuilder", "distros"], cwd=tmp_path, capture_output=True, text=True)
    assert listed.returncode == 0 and listed.stdout.startswith("DISTRO"), listed.stderr
    refused = subprocess.run(["./setup.sh", "--tests-only"], cwd=copy, capture_output=True, text=True)
    assert refused.returncode == 2 and "use --runtime" in refused.stderr
