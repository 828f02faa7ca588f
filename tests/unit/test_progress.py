"""Progress of long commands: a live line on a terminal, one log line per phase otherwise."""

from __future__ import annotations

import io
import logging

from rich.console import Console

from osbuilder.foundation.progress import Progress, progress_for
from osbuilder.rootfs.backends.apt import mmdebstrap_phase
from osbuilder.foundation.runner import PROBE, Runner

# What mmdebstrap prints on stderr while it works (its info lines), replayed by a shell.
SCRIPT = """
echo 'I: chroot architecture amd64 is equal to the host architecture' >&2
echo 'I: running apt-get update...' >&2
echo 'Get:1 http://deb.debian.org/debian bookworm InRelease [151 kB]' >&2
echo 'I: downloading packages with apt...' >&2
echo 'I: extracting archives...' >&2
echo 'I: installing essential packages...' >&2
echo 'I: installing remaining packages inside the chroot...' >&2
echo 'I: cleaning package lists and apt cache...' >&2
"""
PHASES = ["updating the package lists", "downloading packages", "extracting packages",
          "installing essential packages", "installing the remaining packages", "cleaning up"]


def test_phases_are_logged_once_each_without_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger="osbuilder")
    with progress_for(io.StringIO()) as progress:
        assert progress is not None and not progress.live
        Runner(progress=progress).run(["sh", "-c", SCRIPT], limit=PROBE, progress=mmdebstrap_phase)
    logged = [r.getMessage() for r in caplog.records if r.name == "osbuilder"]
    assert logged == [f"sh: {phase}" for phase in PHASES]


def test_a_terminal_gets_a_live_line_that_follows_the_phases():
    screen = io.StringIO()
    progress = Progress(Console(file=screen, force_terminal=True, width=120))
    # Each phase and output line is drawn when it comes: no pacing needed to see them all.
    Runner(progress=progress).run(["sh", "-c", SCRIPT], limit=PROBE, progress=mmdebstrap_phase)
    shown = screen.getvalue()
    assert all(phase in shown for phase in PHASES), shown
    assert "InRelease" in shown  # the latest output line rides along
    assert progress._line is None, "the live line is cleared when the command ends"


def test_commands_without_phases_report_nothing(caplog):
    caplog.set_level(logging.INFO, logger="osbuilder")
    with progress_for(io.StringIO()) as progress:
        Runner(progress=progress).run(["sh", "-c", SCRIPT], limit=PROBE)
    assert [r for r in caplog.records if r.name == "osbuilder"] == []
