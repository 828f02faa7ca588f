"""Progress of long external commands (a bootstrap takes minutes): on a terminal, one live
line that names the phase; otherwise one log line per phase, for CI logs."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Iterator, TextIO

from osbuilder.foundation.events import EVENT_FIELD

if TYPE_CHECKING:
    from rich.console import Console

log = logging.getLogger("osbuilder")
LIVE_LINE_WIDTH = 60


class LiveLine:
    """rich's spinner line, redrawn the moment its text changes (a new phase, the command's
    latest output line), not only at its next tick: what is shown is what was said."""

    def __init__(self, console: Console) -> None:
        from rich.live import Live
        from rich.spinner import Spinner

        self.spinner = Spinner("dots", text="")
        self.live = Live(self.spinner, console=console, refresh_per_second=8, transient=True)
        self.live.start()

    def show(self, text: str) -> None:
        self.spinner.update(text=text)
        self.live.refresh()

    def stop(self) -> None:
        self.live.stop()


class Progress:
    def __init__(self, console: Console | None) -> None:
        self.console = console  # None: log lines instead of a live line
        self._line: LiveLine | None = None
        self._phase = ""
        self._started = 0.0
        self._lock = threading.Lock()

    @property
    def live(self) -> bool:
        return self.console is not None

    def phase(self, task: str, words: str) -> None:
        with self._lock:
            if words == self._phase:
                return
            self._phase = words
            if self.console is None:
                log.info("%s: %s", task, words, extra={EVENT_FIELD: {"kind": "phase", "task": task, "words": words}})
                return
            if self._line is None:
                self._started = time.monotonic()
                self._line = LiveLine(self.console)
            self._line.show(f"{task}: {words} ({time.monotonic() - self._started:.0f} s)")

    def line(self, task: str, text: str) -> None:
        """The command's latest output line, shown after the phase on a terminal."""
        with self._lock:
            if self._line is not None and text.strip():
                from rich.markup import escape  # the command's own square brackets stay text

                self._line.show(f"{task}: {self._phase} ({time.monotonic() - self._started:.0f} s) "
                                f"[dim]{escape(text.strip()[:LIVE_LINE_WIDTH])}[/dim]")

    def done(self) -> None:
        with self._lock:
            if self._line is not None:
                self._line.stop()
                self._line = None
            self._phase = ""


@contextlib.contextmanager
def progress_for(stream: TextIO, enabled: bool = True) -> Iterator[Progress | None]:
    """A Progress for `stream`: live when it is a terminal, log lines otherwise; None when disabled."""
    if not enabled:
        yield None
        return
    console = None
    if stream.isatty():
        from rich.console import Console  # only a terminal's live line needs rich (it costs start-up time)

        console = Console(file=stream, markup=True, highlight=False)
    progress = Progress(console)
    try:
        yield progress
    finally:
        progress.done()
