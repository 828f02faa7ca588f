"""The events a build reports to a parent (a matrix build) on the pipe it is given: each
step as it starts, and the error it ends with, as JSON lines rather than log text."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from osbuilder.foundation.events import EVENTS_FD_VARIABLE
from tests.helpers import fake_bootstrap


def build_with_events(*args: str | os.PathLike[str]) -> tuple[int, list[dict], str]:
    read_end, write_end = os.pipe()
    env = {**os.environ, EVENTS_FD_VARIABLE: str(write_end)}
    env.pop("SOURCE_DATE_EPOCH", None)
    proc = subprocess.Popen([sys.executable, "-m", "osbuilder", "build", *map(str, args)], pass_fds=(write_end,),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    os.close(write_end)
    with os.fdopen(read_end) as events:
        lines = events.read().splitlines()
    stderr = proc.stderr.read()
    return proc.wait(), [json.loads(line) for line in lines], stderr


def test_steps_and_the_error_arrive_as_events(tmp_path: Path):
    existing = tmp_path / "tree"
    fake_bootstrap(existing, with_systemd=False)
    code, events, stderr = build_with_events("--existing", existing, "--distro", "debian", "--init", "agent",
                                             "--agent", "/bin/busybox", "-o", tmp_path / "out")
    assert code == 0, stderr
    steps = [e["title"] for e in events if e["event"] == "step"]
    assert steps[0].startswith("Copying ") and "Packing the initrd" in steps, events
    assert not [e for e in events if e["event"] == "error"]

    code, events, stderr = build_with_events("--existing", existing, "--distro", "debian", "--init", "agent",
                                             "--agent", tmp_path / "no-such-agent", "-o", tmp_path / "out2")
    assert code == 2, stderr
    (error,) = [e for e in events if e["event"] == "error"]
    assert error["exit_code"] == 2 and "no-such-agent" in error["message"] and error["hint"], error
    # The log line says the same in words; the event carries it as fields.
    assert f"osbuilder: error: {error['message']}" in stderr


def test_without_the_variable_nothing_is_written(tmp_path: Path):
    """An ordinary build has no listener: it opens no descriptor it was not given."""
    from osbuilder.foundation.events import sink_from_environment

    assert sink_from_environment({}) is None
    assert sink_from_environment({EVENTS_FD_VARIABLE: "not-a-number"}) is None
