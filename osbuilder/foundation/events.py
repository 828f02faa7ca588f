"""Structured progress for a parent process: JSON lines on a pipe the parent passed down.

A matrix build starts each target as its own `osbuilder build` and reads what it is doing
from these events, never from its log lines: a step started, a tool's phase, the error it
ended with (message, hint and exit code). The pipe's descriptor comes in EVENTS_FD_VARIABLE;
without it nothing is written. Steps reach it through logging (steps.py logs each step with
its event attached), so the stages need not know who is listening."""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any, TextIO

EVENTS_FD_VARIABLE = "OSBUILDER_EVENTS_FD"
# The key of a log record's `extra` that carries its event.
EVENT_FIELD = "osbuilder_event"


class EventSink:
    """Writes one JSON object per line, whole, from any thread."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def emit(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"event": kind, **fields}, sort_keys=True, default=str)
        with self._lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (BrokenPipeError, ValueError):
                pass  # the parent stopped listening: the build goes on, its log still has everything

    def close(self) -> None:
        try:
            self.stream.close()
        except BrokenPipeError:
            pass


def sink_from_environment(environ: dict[str, str] | os._Environ[str]) -> EventSink | None:
    text = environ.get(EVENTS_FD_VARIABLE)
    if not text:
        return None
    try:
        return EventSink(os.fdopen(int(text), "w", buffering=1, closefd=True))
    except (ValueError, OSError):
        return None  # not ours to fail on: the parent's reader reports the missing events


class EventLogHandler(logging.Handler):
    """Passes the events attached to log records on to the sink."""

    def __init__(self, sink: EventSink) -> None:
        super().__init__(logging.INFO)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, EVENT_FIELD, None)
        if isinstance(event, dict):
            self.sink.emit(**event)


def parse_event(line: str) -> dict[str, Any] | None:
    """One line a child wrote, or None when it is not an event."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and isinstance(event.get("event"), str) else None
