"""The one timestamp policy, used by every stage: SOURCE_DATE_EPOCH when it is set, else the
creation time the tree's osbuilder.yaml records, else 0. Never the build host's clock."""

from __future__ import annotations

import datetime
import os
from typing import Any

from osbuilder.foundation.errors import UserError

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def source_date_epoch_from_env() -> int | None:
    raw = os.environ.get("SOURCE_DATE_EPOCH")
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise UserError(f"SOURCE_DATE_EPOCH must be a whole number of seconds (got '{raw}')",
                        "set it to e.g. $(git log -1 --format=%ct)")
    return int(raw)


def format_time(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime(TIME_FORMAT)


def recorded_epoch(summary: dict[str, Any] | None) -> int | None:
    """The creation time a parsed osbuilder.yaml records, or None."""
    text = (summary or {}).get("rootfs-creation-time")
    if not isinstance(text, str):
        return None
    try:
        when = datetime.datetime.strptime(text, TIME_FORMAT).replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None
    return int(when.timestamp())


def build_epoch(summary: dict[str, Any] | None = None) -> int:
    """The clamp for every timestamp a stage writes."""
    epoch = source_date_epoch_from_env()
    if epoch is None:
        epoch = recorded_epoch(summary)
    return epoch or 0
