"""A confidential guest's changes (Kata's CONFIDENTIAL_GUEST=yes, docs/kata-contract.md, release packaging): /run
as a tmpfs of half the memory, because systemd's default is too small for pulling images
inside the guest, and kata-containers.target requiring systemd-remount-fs.service, which
applies that fstab line (the fstab generator is trimmed away)."""

from __future__ import annotations

from osbuilder.foundation.fsutil import GuestRoot
from osbuilder.foundation.guest_layout import FSTAB, UNIT_DIR
from osbuilder.foundation.templates import Templates

AGENT_TARGET = f"{UNIT_DIR}/kata-containers.target"


def _mounts_run(line: str) -> bool:
    fields = line.split()
    return len(fields) >= 2 and not fields[0].startswith("#") and fields[1].rstrip("/") == "/run"


def add_to_unit_section(text: str, lines: str) -> str:
    """`lines` at the end of the unit file's [Unit] section (where Kata's `>>` puts them when
    [Unit] is its only section); a file without one gets one."""
    out = text.splitlines()
    start = next((i for i, line in enumerate(out) if line.strip() == "[Unit]"), None)
    if start is None:
        return "[Unit]\n" + lines + text
    end = next((i for i in range(start + 1, len(out)) if out[i].strip().startswith("[")), len(out))
    while end > start + 1 and not out[end - 1].strip():
        end -= 1  # before the blank lines that close the section
    return "\n".join(out[:end] + lines.rstrip("\n").splitlines() + out[end:]) + "\n"


def make_confidential(guest: GuestRoot, templates: Templates) -> None:
    fstab = guest.read_text(FSTAB) if guest.exists(FSTAB) else ""
    kept = [line for line in fstab.splitlines() if not _mounts_run(line)]
    text = "\n".join(kept) + ("\n" if kept else "") + templates.render("fstab.run-confidential.j2")
    if guest.exists(FSTAB):
        guest.replace_text(FSTAB, text)
    else:
        guest.write_text(FSTAB, text)
    target = guest.read_text(AGENT_TARGET)
    lines = templates.render("kata-containers.target.confidential.j2")
    guest.replace_text(AGENT_TARGET, add_to_unit_section(target, lines))
