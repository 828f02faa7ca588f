"""A throwaway init mode: /sbin/init is a shell script that starts the agent, which is not
PID 1 and so follows the host's cgroup driver. Inspect and check have to ask the mode how
to recognise it and what it implies."""

from __future__ import annotations

from osbuilder.foundation.arch import Arch
from osbuilder.foundation.errors import BuildError
from osbuilder.foundation.fsutil import GuestRoot
from osbuilder.foundation.guest_layout import AGENT_PATH, INIT_PATH
from osbuilder.rootfs.initmode import INIT_MODES, InitInputs, InitMode, InstalledAgent
from osbuilder.read.view import GuestView
from osbuilder.rootfs.agent import AgentBinary
from osbuilder.foundation.templates import Templates

MARK = b"# started by the throwaway script init mode"
SCRIPT = b"#!/bin/sh\n" + MARK + b"\nexec " + AGENT_PATH.encode() + b"\n"


class ScriptInit(InitMode):
    name = "script"
    help = "a shell script is /sbin/init and execs the agent (a test's throwaway mode)"
    agent_is_init = False
    runs_systemd = False
    agent_path = AGENT_PATH
    initrd_init_target = INIT_PATH
    recognition_rank = 20

    def observed_in(self, view: GuestView) -> str | None:
        init = view.read_file(INIT_PATH)
        return f"{INIT_PATH} is the throwaway start script" if init is not None and MARK in init else None

    def install(self, guest: GuestRoot, agent: AgentBinary, templates: Templates, inputs: InitInputs) -> None:
        guest.copy_file(agent.path, self.agent_path, 0o755)
        guest.write_text(INIT_PATH, SCRIPT.decode(), 0o755)

    def validate(self, guest: GuestRoot, target: Arch, expected: InstalledAgent) -> None:
        if MARK not in guest.resolve(INIT_PATH).read_bytes():
            raise BuildError(f"{INIT_PATH} is not the start script", "rebuild the tree")
        if not guest.resolve(self.agent_path).is_file():
            raise BuildError(f"the agent is missing at {self.agent_path}", "rebuild the tree")


INIT_MODES[ScriptInit.name] = ScriptInit()
