"""ISO 9660 with Rock Ridge through pycdlib, for read-only root delivery.

Rock Ridge carries the real names, modes, owners and symlinks; the ISO 9660 names are
generated (short, unique, sorted) and never seen by a Rock Ridge reader. Device nodes
and fifos have no pycdlib API and are left out (the guest mounts devtmpfs on /dev).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time as _time
from pathlib import Path
from typing import Any, Iterator

import pycdlib
import pycdlib.dates
import pycdlib.headervd
import pycdlib.pycdlib
import pycdlib.utils

log = logging.getLogger("osbuilder")

# pycdlib's modules that read the clock and the local time zone.
_CLOCK_READERS = (pycdlib.pycdlib, pycdlib.headervd, pycdlib.dates, pycdlib.utils)


class _FrozenUtcClock:
    """Stands in for the `time` module inside pycdlib: a fixed epoch, and UTC for local time
    so the build host's time zone does not reach the image."""

    def __init__(self, epoch: int) -> None:
        self._epoch = float(epoch)

    def time(self) -> float:
        return self._epoch

    localtime = staticmethod(_time.gmtime)

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


@contextlib.contextmanager
def _frozen_clock(epoch: int) -> Iterator[None]:
    saved = [(module, module.time) for module in _CLOCK_READERS]
    try:
        for module, _ in saved:
            module.time = _FrozenUtcClock(epoch)  # type: ignore[assignment]
        yield
    finally:
        for module, original in saved:
            module.time = original


def _set_posix(iso: pycdlib.PyCdlib, rr_path: str, st: os.stat_result) -> None:
    """pycdlib writes every owner as 0 and fixes some modes; put the tree's values in."""
    record = iso.get_record(rr_path=rr_path)
    records = [record]
    if record.is_dir() and record.children:
        records.append(record.children[0])  # the directory's own "." entry (the root's only one)
    for rec in records:
        if rec.rock_ridge is None:
            continue
        entries = rec.rock_ridge.dr_entries
        # Long names push the PX entry into the continuation area.
        px = entries.px_record or (rec.rock_ridge.ce_entries and rec.rock_ridge.ce_entries.px_record)
        px.posix_file_mode = st.st_mode
        px.posix_user_id = st.st_uid
        px.posix_group_id = st.st_gid


def write_iso(root: Path, output: Path, epoch: int, volume_id: str = "OSBUILDER") -> dict[str, int]:
    """Write `root` as an ISO to `output`. Returns counts of what was stored and skipped."""
    counts = {"files": 0, "directories": 0, "symlinks": 0, "hardlinks": 0, "skipped_special": 0}
    iso = pycdlib.PyCdlib()
    with _frozen_clock(epoch):
        iso.new(interchange_level=4, rock_ridge="1.09", vol_ident=volume_id)
        try:
            # Owners and modes are set after every entry is added: each record lookup makes
            # pycdlib lay out the whole image again if additions are pending.
            posix: list[tuple[str, os.stat_result]] = [("/", os.lstat(root))]
            first_link: dict[tuple[int, int], str] = {}
            stack: list[tuple[Path, str, str]] = [(root, "/", "/")]
            while stack:
                directory, iso_dir, rr_dir = stack.pop()
                entries = sorted(os.scandir(directory), key=lambda e: os.fsencode(e.name))
                subdirs = []
                for index, entry in enumerate(entries):
                    st = entry.stat(follow_symlinks=False)
                    iso_path = f"{iso_dir.rstrip('/')}/{'D' if stat.S_ISDIR(st.st_mode) else 'F'}{index:07d}"
                    rr_path = f"{rr_dir.rstrip('/')}/{entry.name}"
                    if stat.S_ISDIR(st.st_mode):
                        iso.add_directory(iso_path, rr_name=entry.name, file_mode=st.st_mode)
                        subdirs.append((Path(entry.path), iso_path, rr_path))
                        counts["directories"] += 1
                    elif stat.S_ISLNK(st.st_mode):
                        iso.add_symlink(symlink_path=iso_path + ";1", rr_symlink_name=entry.name,
                                        rr_path=os.readlink(entry.path))
                        counts["symlinks"] += 1
                    elif stat.S_ISREG(st.st_mode):
                        key = (st.st_dev, st.st_ino)
                        if st.st_nlink > 1 and key in first_link:
                            iso.add_hard_link(iso_old_path=first_link[key], iso_new_path=iso_path + ";1",
                                              rr_name=entry.name)
                            counts["hardlinks"] += 1
                        else:
                            # By name: pycdlib opens each file only while it copies it, so a
                            # tree of any size stays within the open-file limit.
                            iso.add_file(entry.path, iso_path + ";1", rr_name=entry.name, file_mode=st.st_mode)
                            first_link[key] = iso_path + ";1"
                            counts["files"] += 1
                    else:
                        counts["skipped_special"] += 1
                        continue
                    posix.append((rr_path, st))
                stack.extend(reversed(subdirs))
            for rr_path, st in posix:
                _set_posix(iso, rr_path, st)
            iso.write(str(output))
        finally:
            iso.close()
    if counts["skipped_special"]:
        log.info("iso: left out %d device nodes and fifos (ISO 9660 via pycdlib cannot hold them)",
                 counts["skipped_special"])
    return counts
