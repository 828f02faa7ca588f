"""Tasks run side by side (a build's formats): results in order, and one task's failure
stops the others' commands instead of waiting for them (foundation/side_by_side.py)."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from osbuilder.foundation.errors import CommandError, UserError
from osbuilder.foundation.runner import FILESYSTEM, Runner
from osbuilder.foundation.side_by_side import side_by_side


def test_results_come_in_the_tasks_order_and_the_tasks_overlap():
    runner = Runner()
    # Each task waits for the other to be running: one after the other, the barrier breaks.
    meeting = threading.Barrier(2, timeout=10)

    def task(word: str) -> str:
        meeting.wait()
        return runner.run(["echo", word], limit=FILESYSTEM).stdout

    assert side_by_side([lambda: task("first"), lambda: task("second")], runner) == ["first\n", "second\n"]


class LongCommand:
    """A task running `sleep 60` through the runner; `ended` holds how it ended, `started`
    is set as it starts."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.started = threading.Event()
        self.ended: list[BaseException] = []

    def __call__(self) -> str:
        self.started.set()
        try:
            return self.runner.run(["sleep", "60"], limit=FILESYSTEM).stdout
        except BaseException as exc:
            self.ended.append(exc)
            raise

    def was_killed(self) -> bool:
        """Killed (SIGTERM), not waited for, and ended before side_by_side returned."""
        return (len(self.ended) == 1 and isinstance(self.ended[0], CommandError)
                and self.ended[0].returncode == -signal.SIGTERM)


def test_a_failure_stops_the_other_tasks_commands_and_is_the_error_raised():
    runner = Runner(kill_grace=1.0)
    long_command = LongCommand(runner)

    def failing() -> str:
        long_command.started.wait(10)
        time.sleep(0.2)  # the sleep has started
        raise UserError("the second format is refused", "fix it")

    with pytest.raises(UserError, match="the second format is refused"):
        side_by_side([long_command, failing], runner)
    assert long_command.was_killed()
    # The runner takes commands again afterwards (the staging's clean-up may run some).
    assert runner.run(["echo", "again"], limit=FILESYSTEM).stdout == "again\n"


def test_a_command_started_while_cancelled_is_stopped():
    runner = Runner(kill_grace=1.0)
    runner.cancel()
    try:
        with pytest.raises(CommandError):
            runner.run(["sleep", "60"], limit=FILESYSTEM)
    finally:
        runner.resume()


def test_one_task_runs_in_the_callers_thread():
    assert side_by_side([threading.current_thread], Runner()) == [threading.current_thread()]


def test_meanwhile_runs_while_the_tasks_do_and_its_refusal_wins():
    runner = Runner(kill_grace=1.0)
    meeting = threading.Barrier(2, timeout=10)
    long_command = LongCommand(runner)

    def task_that_fails_first() -> str:
        meeting.wait()  # the check is running
        raise UserError("a packer's own error", "fix it")

    def check() -> None:
        meeting.wait()
        time.sleep(0.3)  # fails after the packer did
        raise UserError("the tree fails its checks", "rebuild it")

    with pytest.raises(UserError, match="the tree fails its checks"):
        side_by_side([task_that_fails_first, long_command], runner, meanwhile=check)
    assert long_command.was_killed()


def test_meanwhile_passing_leaves_the_results():
    runner = Runner()
    seen: list[str] = []
    assert side_by_side([lambda: "packed"], runner, meanwhile=lambda: seen.append("checked")) == ["packed"]
    assert seen == ["checked"]
