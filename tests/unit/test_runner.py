"""The runner's bounded waits: a command with a timeout ends with its own exit code and
output, and one that outlives its timeout is killed with its whole process group."""

from __future__ import annotations

import subprocess

import pytest

from osbuilder.errors import CommandError
from osbuilder.runner import Runner


def test_a_command_within_its_timeout_gives_its_code_and_output():
    result = Runner().run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=30, check=False)
    assert (result.returncode, result.stdout, result.stderr_tail) == (3, "out\n", "err")
    with pytest.raises(CommandError, match="exited with code 3"):
        Runner().run(["sh", "-c", "exit 3"], timeout=30)


def test_a_command_past_its_timeout_is_killed_with_its_children(tmp_path):
    pid_file = tmp_path / "child.pid"
    with pytest.raises(CommandError, match="timed out"):
        Runner().run(["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], timeout=1)
    child = int(pid_file.read_text())
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(child)], capture_output=True, text=True).stdout.strip()
    assert state in ("", "Z"), f"the command's child {child} outlived the timeout ({state})"
