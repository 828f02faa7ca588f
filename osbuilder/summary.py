"""The summary file inside every guest: /var/lib/osbuilder/osbuilder.yaml.

It records how the guest was built, above all the init mode and the cgroup driver that
mode implies, so an image can be checked against a host before it is deployed.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

from osbuilder import __version__
from osbuilder.templates import Templates

SUMMARY_PATH = "/var/lib/osbuilder/osbuilder.yaml"
OSBUILDER_URL = "osbuilder"


def cgroup_driver_for(init_mode: str) -> str:
    """The agent's rule (reference section 2): as PID 1 it always uses cgroupfs;
    under systemd it follows the host's driver."""
    return "cgroupfs" if init_mode == "agent" else "host"


@dataclass(frozen=True)
class Summary:
    architecture: str
    distro: str
    release: str
    default_packages: tuple[str, ...]
    extra_packages: tuple[str, ...]
    init_mode: str
    agent_url: str
    agent_version: str
    agent_sha256: str
    creation_epoch: int | None
    probe: bool = False  # the agent is osbuilder's probe agent

    @property
    def cgroup_driver(self) -> str:
        return cgroup_driver_for(self.init_mode)

    def render(self, templates: Templates) -> str:
        when = (datetime.datetime.fromtimestamp(self.creation_epoch, datetime.timezone.utc)
                if self.creation_epoch is not None else datetime.datetime.now(datetime.timezone.utc))
        return templates.render(
            "osbuilder.yaml.j2",
            osbuilder_url=OSBUILDER_URL,
            osbuilder_version=__version__,
            creation_time=when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            description=f"osbuilder {self.distro} {self.release} guest ({self.init_mode} init)",
            architecture=self.architecture,
            distro=self.distro,
            release=self.release,
            default_packages=sorted(set(self.default_packages)),
            extra_packages=sorted(set(self.extra_packages)),
            agent_url=self.agent_url,
            agent_version=self.agent_version,
            init_mode=self.init_mode,
            cgroup_driver=self.cgroup_driver,
            agent_sha256=self.agent_sha256,
            agent_name="osbuilder-probe" if self.probe else "kata-agent",
            probe=self.probe,
        )


def parse_summary(text: str) -> dict[str, Any]:
    """Read back the YAML subset osbuilder writes: nested maps, lists, quoted scalars."""
    root: dict[str, Any] = {}
    stack: list[tuple[int, Any]] = [(-1, root)]
    pending: tuple[dict[str, Any], str, int] | None = None  # a key whose value is on the next lines
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#") or raw.strip() == "---":
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        line = raw.strip()
        if pending is not None:
            parent, key, key_indent = pending
            pending = None
            if indent > key_indent:
                parent[key] = [] if line.startswith("- ") else {}
                stack.append((key_indent, parent[key]))
            else:
                parent[key] = None
        while stack and indent <= stack[-1][0]:
            stack.pop()
        container = stack[-1][1]
        if line.startswith("- "):
            container.append(_scalar(line[2:]))
            continue
        key, _, rest = line.partition(":")
        rest = rest.strip()
        if rest:
            container[key] = _scalar(rest)
        else:
            pending = (container, key, indent)
    if pending is not None:
        pending[0][pending[1]] = None
    return root


def _scalar(text: str) -> Any:
    if text == "[]":
        return []
    if text.startswith('"'):
        return json.loads(text)
    return text
