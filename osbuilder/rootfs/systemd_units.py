"""Just enough of systemd's unit loading to answer "does basic.target pull in X?"."""

from __future__ import annotations

from collections import deque

from osbuilder.foundation.fsutil import GuestRoot
from osbuilder.foundation.guest_layout import UNIT_SEARCH_PATH

_PULLING_KEYS = ("Wants", "Requires", "Requisite", "BindsTo", "Upholds")


def _unit_files(guest: GuestRoot, unit: str) -> list[str]:
    """The unit file that wins plus its drop-ins, as systemd would load them."""
    texts = []
    for directory in UNIT_SEARCH_PATH:
        path = guest.resolve(f"{directory}/{unit}")
        if path.is_file():
            texts.append(path.read_text(errors="replace"))
            break
    for directory in UNIT_SEARCH_PATH:
        dropins = guest.resolve(f"{directory}/{unit}.d")
        if dropins.is_dir():
            texts += [p.read_text(errors="replace") for p in sorted(dropins.glob("*.conf")) if p.is_file()]
    return texts


def dependencies(guest: GuestRoot, unit: str) -> set[str]:
    found: set[str] = set()
    for directory in UNIT_SEARCH_PATH:
        for suffix in (".wants", ".requires"):
            wants = guest.resolve(f"{directory}/{unit}{suffix}")
            if wants.is_dir():
                found.update(p.name for p in wants.iterdir())
    for text in _unit_files(guest, unit):
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() in _PULLING_KEYS:
                found.update(value.split())
    return found


def unit_exists(guest: GuestRoot, unit: str) -> bool:
    return any(guest.resolve(f"{d}/{unit}").is_file() for d in UNIT_SEARCH_PATH)


def pulls_in(guest: GuestRoot, start: str, goal: str) -> bool:
    """True if starting `start` makes systemd start `goal`."""
    seen = {start}
    queue = deque([start])
    while queue:
        unit = queue.popleft()
        if unit == goal:
            return True
        for dep in dependencies(guest, unit) - seen:
            seen.add(dep)
            queue.append(dep)
    return False


def first_existing_unit(guest: GuestRoot, units: tuple[str, ...]) -> str | None:
    return next((unit for unit in units if unit_exists(guest, unit)), None)
