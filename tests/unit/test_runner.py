"""The runner's bounded waits: every command has the limit of its kind; one within it ends
with its own exit code and output, one that outlives it is killed with its whole process
group and reported with the limit that fired."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from osbuilder.foundation.errors import CommandError
from osbuilder.foundation.runner import PROBE, Limit, Runner

ONE_SECOND = Limit("test command", 1)


def test_a_command_within_its_timeout_gives_its_code_and_output():
    result = Runner().run(["sh", "-c", "echo out; echo err >&2; exit 3"], limit=PROBE, check=False)
    assert (result.returncode, result.stdout, result.stderr_tail) == (3, "out\n", "err")
    with pytest.raises(CommandError, match="exited with code 3"):
        Runner().run(["sh", "-c", "exit 3"], limit=PROBE)


def test_a_command_past_its_timeout_is_killed_with_its_children(tmp_path):
    pid_file = tmp_path / "child.pid"
    with pytest.raises(CommandError, match="timed out") as timed_out:
        Runner().run(["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], limit=ONE_SECOND)
    assert "ran past 1 s, the limit for a test command" in str(timed_out.value)
    child = int(pid_file.read_text())
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(child)], capture_output=True, text=True).stdout.strip()
    assert state in ("", "Z"), f"the command's child {child} outlived the timeout ({state})"


def test_the_limits_scale_for_slow_hosts():
    with pytest.raises(CommandError, match="ran past 0.5 s"):
        Runner(timeout_scale=0.5).run(["sleep", "5"], limit=ONE_SECOND)


def test_a_filter_past_its_limit_is_killed_and_reported(tmp_path):
    """pipe_to's limit covers the whole stream, however long the writer takes."""
    with open(tmp_path / "out", "wb") as out:
        with pytest.raises(CommandError, match="timed out") as timed_out:
            with Runner().pipe_to(["sh", "-c", "sleep 60; cat"], out, limit=ONE_SECOND) as stdin:
                stdin.write(b"data")
    assert "the limit for a test command" in str(timed_out.value)


def test_every_command_osbuilder_runs_has_a_limit():
    """run and pipe_to take `limit` as a keyword without a default; every call names it."""
    import ast

    import osbuilder

    package = Path(osbuilder.__file__).parent
    missing, count = [], 0
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in ("run", "pipe_to") and \
                    ast.unparse(node.func.value).split(".")[-1] in ("runner", "self", "Runner()"):
                count += 1
                if not any(k.arg == "limit" for k in node.keywords):
                    missing.append(f"{path.relative_to(package)}:{node.lineno}")
    assert count > 40, "the walk missed the calls"
    assert missing == []
