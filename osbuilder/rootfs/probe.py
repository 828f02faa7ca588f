"""The probe agent: a built-in smoke test installed where the agent goes.

It is a POSIX shell script rendered from templates/osbuilder-probe.sh.j2. Booted, it prints
one line saying what the real agent would find (PID 1 or not, systemd, the cgroup version,
the host's cgroup driver from the kernel command line, the driver the agent's rule picks)
and powers the guest off. `osbuilder boot` waits for that line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osbuilder.foundation.errors import UserError
from osbuilder.foundation.fsutil import sha256_file
from osbuilder.foundation.guest_layout import AGENT_PATH, INIT_PATH, SHELL
from osbuilder.rootfs.agent import AgentBinary
from osbuilder.rootfs.extension_mount import MOUNT_ROOT

if TYPE_CHECKING:  # jinja2 is imported by what renders, not by what checks
    from osbuilder.foundation.templates import Templates

PROBE_MARKER = "OSBUILDER-PROBE"
PROBE_ERROR_MARKER = "OSBUILDER-PROBE-ERROR"
PROBE_FIELDS = ("pid", "init_mode", "systemd", "cgroup", "host_cgroup_driver", "cgroup_driver", "arch",
                "mem_used_kib", "run_kib", "extensions")
PROBE_PATTERN = (PROBE_MARKER + r" pid=\d+ init_mode=(?:true|false) systemd=(?:true|false) cgroup=(?:v1|v2|hybrid)"
                 r" host_cgroup_driver=(?:systemd|cgroupfs|none) cgroup_driver=(?:systemd|cgroupfs) arch=\S+"
                 # Probes in guests built before it was reported print no memory figure.
                 r"(?: mem_used_kib=\d+)?"
                 # The size of /run (0: not a mounted filesystem); a confidential guest's is half the memory.
                 r"(?: run_kib=\d+)?"
                 # The extension images mounted under /run/kata-extensions, name:files each, or none.
                 r"(?: extensions=(?:none|[A-Za-z0-9_-]+:\d+(?:,[A-Za-z0-9_-]+:\d+)*))?")
NO_EXTENSIONS = "none"  # the probe's extensions= when nothing is mounted
PROBE_DESCRIPTION = "osbuilder probe agent (POSIX shell script)"
DBUS_WAIT_SECONDS = 60


def render_probe(templates: Templates, into: Path) -> AgentBinary:
    """Write the probe script to `into` and describe it like an agent binary."""
    text = templates.render("osbuilder-probe.sh.j2", marker=PROBE_MARKER, error_marker=PROBE_ERROR_MARKER,
                            init_path=INIT_PATH, agent_path=AGENT_PATH, dbus_wait_seconds=DBUS_WAIT_SECONDS,
                            extension_root=MOUNT_ROOT, no_extensions=NO_EXTENSIONS)
    into.write_text(text)
    into.chmod(0o755)
    return AgentBinary(path=into, sha256=sha256_file(into), description=PROBE_DESCRIPTION, probe=True)


def is_probe_script(data: bytes | None) -> bool:
    """The bytes are osbuilder's probe agent."""
    return data is not None and data.startswith(f"#!{SHELL}".encode()) and PROBE_MARKER.encode() in data


def check_probe(path: Path, expected_sha256: str | None) -> AgentBinary:
    """An installed probe: a shell script, the one osbuilder rendered when the digest is known."""
    with open(path, "rb") as f:
        if not f.read(len(SHELL) + 2) == f"#!{SHELL}".encode():
            raise UserError(f"{path} is not the osbuilder probe agent", "rebuild the tree with --probe-agent")
    digest = sha256_file(path)
    if expected_sha256 is not None and digest != expected_sha256:
        raise UserError(f"{path} is not the probe agent osbuilder installed", "rebuild the tree")
    return AgentBinary(path=path, sha256=digest, description=PROBE_DESCRIPTION, probe=True)


def parse_probe_line(line: str) -> dict[str, Any] | None:
    """The probe's fields, typed: pid an int, the booleans bools, the rest strings."""
    match = re.search(PROBE_PATTERN, line)
    if match is None:
        return None
    fields: dict[str, Any] = dict(item.split("=", 1) for item in match.group(0).split()[1:])
    fields["pid"] = int(fields["pid"])
    for key in ("mem_used_kib", "run_kib"):
        if key in fields:
            fields[key] = int(fields[key])
    for key in ("init_mode", "systemd"):
        fields[key] = fields[key] == "true"
    if "extensions" in fields:
        listed = fields["extensions"]
        fields["extensions"] = {} if listed == NO_EXTENSIONS else {
            name: int(count) for name, _, count in (item.partition(":") for item in listed.split(","))}
    return fields
