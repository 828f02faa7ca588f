"""Steps that say what they do, and how long it took."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Iterator

from osbuilder.foundation.events import EVENT_FIELD

log = logging.getLogger("osbuilder")


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    log.info("%s...", title, extra={EVENT_FIELD: {"kind": "step", "title": title}})
    start = time.monotonic()
    yield
    log.info("%s: done in %.2f s", title, time.monotonic() - start)
