"""Payloads over the rootfs: hooks, the pause bundle, confidential-guest components, the
agent policy and an overlay, each recorded with its sha256; hostile ones refused whole."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
from pathlib import Path

import pytest

from osbuilder.config import make_rootfs_options
from osbuilder.foundation.errors import UserError
from osbuilder.foundation.fsutil import GuestRoot
from osbuilder.rootfs.agent import check_agent
from osbuilder.rootfs.provision import Provisioner
from osbuilder.rootfs.summary import parse_summary
from osbuilder.foundation.runner import Runner
from osbuilder.foundation.templates import Templates
from tests.helpers import fake_bootstrap
from tests.unit.test_extract import add, make_tar

AGENT = Path("/bin/busybox")


def provision(tmp_path: Path, **values) -> GuestRoot:
    root = tmp_path / "rootfs"
    fake_bootstrap(root, with_systemd=False)
    options, recipe = make_rootfs_options({"distro": "debian", "init": "agent", "agent": str(AGENT),
                                           "arch": "x86_64", **values})
    options = dataclasses.replace(options, source_date_epoch=1700000000)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    guest = GuestRoot(root)
    Provisioner(guest, options, recipe, check_agent(AGENT, options.target), Templates(), (), work, Runner()).run()
    return guest


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tarball_payloads_land_where_kata_expects_them(tmp_path: Path):
    """Each tarball as Kata ships it (./-prefixed, its own paths), unpacked over /."""
    hooks = make_tar(tmp_path / "hooks.tar", lambda t: add(t, "./usr/share/oci/hooks/prestart/setup-gpu",
                                                           data=b"#!/bin/sh\n", mode=0o755))
    pause = make_tar(tmp_path / "pause.tar", lambda t: (add(t, "./pause_bundle/config.json", data=b"{}"),
                                                        add(t, "./pause_bundle/rootfs/pause", data=b"\x7fELF",
                                                            mode=0o755)))
    coco = make_tar(tmp_path / "coco.tar", lambda t: add(t, "./usr/local/bin/attestation-agent", data=b"aa",
                                                         mode=0o755))
    guest = provision(tmp_path, guest_hooks=hooks, pause_image=pause, coco_components=coco)
    assert guest.read_text("/usr/share/oci/hooks/prestart/setup-gpu") == "#!/bin/sh\n"
    assert guest.read_text("/pause_bundle/config.json") == "{}"
    assert stat.S_IMODE(guest.resolve("/pause_bundle/rootfs/pause").stat().st_mode) == 0o755
    assert guest.resolve("/usr/local/bin/attestation-agent").read_bytes() == b"aa"
    assert not guest.lexists("/pause_bundle/pause_bundle") and not guest.lexists("/usr/share/oci/hooks/usr")
    recorded = parse_summary(guest.read_text("/var/lib/osbuilder/osbuilder.yaml"))["payloads"]
    assert recorded == [{"name": "guest_hooks", "source": "hooks.tar", "sha256": digest(hooks)},
                        {"name": "pause_image", "source": "pause.tar", "sha256": digest(pause)},
                        {"name": "coco_components", "source": "coco.tar", "sha256": digest(coco)}]


def test_a_pause_tarball_not_in_kata_s_layout_is_refused_before_any_work(tmp_path: Path):
    """A bundle packed from inside pause_bundle/ would land at /config.json: refused, naming
    the layout expected, by the check run before staging and by the unpacking itself."""
    from osbuilder.rootfs.stage import precheck_inputs

    flat = make_tar(tmp_path / "pause.tar", lambda t: (add(t, "./config.json", data=b"{}"),
                                                       add(t, "./rootfs/pause", data=b"\x7fELF", mode=0o755)))
    options, _ = make_rootfs_options({"distro": "debian", "init": "agent", "agent": str(AGENT), "pause_image": flat})
    with pytest.raises(UserError, match="holds no pause_bundle/config.json") as refused:
        precheck_inputs(options, Runner())
    assert "./pause_bundle/config.json" in refused.value.hint
    with pytest.raises(UserError, match="holds no pause_bundle/config.json"):
        provision(tmp_path / "tree", pause_image=flat)
    assert not (tmp_path / "tree/rootfs/config.json").exists()


def test_a_hostile_payload_is_refused_and_nothing_escapes(tmp_path: Path):
    victim = tmp_path / "victim.txt"
    victim.write_text("host\n")
    hooks = make_tar(tmp_path / "hooks.tar", lambda t: add(t, "../../../../victim.txt", data=b"owned"))
    with pytest.raises(UserError, match="has a '..' component"):
        provision(tmp_path, guest_hooks=hooks)
    devices = make_tar(tmp_path / "dev.tar", lambda t: add(t, "dev/mem", kind=b"3", device=(1, 1)))
    with pytest.raises(UserError, match="is a device node"):
        provision(tmp_path / "second", coco_components=devices)
    assert victim.read_text() == "host\n"


def test_the_agent_policy_and_its_default_link(tmp_path: Path):
    guest = provision(tmp_path / "default", agent_policy="default")
    assert os.readlink(guest.resolve("/etc/kata-opa/default-policy.rego", follow_final=False)) == "allow-all.rego"
    assert "default CreateContainerRequest := true" in guest.read_text("/etc/kata-opa/default-policy.rego")
    policy = tmp_path / "genpolicy.rego"
    policy.write_text("package agent_policy\ndefault CreateContainerRequest := false\n")
    guest = provision(tmp_path / "own", agent_policy=str(policy))
    assert guest.read_text("/etc/kata-opa/default-policy.rego") == policy.read_text()
    recorded = parse_summary(guest.read_text("/var/lib/osbuilder/osbuilder.yaml"))["payloads"]
    assert recorded == [{"name": "agent_policy", "source": "genpolicy.rego", "sha256": digest(policy)}]
    with pytest.raises(UserError, match="does not exist"):
        provision(tmp_path / "missing", agent_policy=str(tmp_path / "nope.rego"))


@pytest.mark.parametrize("owner", ["tree", "root"])
def test_the_overlay_wins_and_keeps_or_forces_owners(tmp_path: Path, owner: str):
    overlay = tmp_path / "overlay"
    (overlay / "etc").mkdir(parents=True)
    (overlay / "etc/resolv.conf").write_text("nameserver 192.0.2.53\n")  # over osbuilder's empty one
    (overlay / "etc/motd").write_text("hello\n")
    os.chown(overlay / "etc/motd", 1000, 1001)
    os.symlink("/usr/bin/busybox", overlay / "etc/tool")
    guest = provision(tmp_path / owner, overlay=overlay, overlay_owner=owner)
    assert guest.read_text("/etc/resolv.conf") == "nameserver 192.0.2.53\n"
    motd = guest.resolve("/etc/motd").stat()
    assert (motd.st_uid, motd.st_gid) == ((1000, 1001) if owner == "tree" else (0, 0))
    assert os.readlink(guest.resolve("/etc/tool", follow_final=False)) == "/usr/bin/busybox"
    (record,) = parse_summary(guest.read_text("/var/lib/osbuilder/osbuilder.yaml"))["payloads"]
    assert record["name"] == "overlay" and record["source"] == "overlay" and len(record["sha256"]) == 64


# docs/kata-contract.md, release packaging: the requests Kata's allow-all.rego defines; the agent refuses any other.
KATA_POLICY_RULES = """AddARPNeighborsRequest AddSwapRequest CloseStdinRequest CopyFileRequest CreateContainerRequest
CreateSandboxRequest DestroySandboxRequest ExecProcessRequest GetDiagnosticDataRequest GetMetricsRequest
GetOOMEventRequest GuestDetailsRequest ListInterfacesRequest ListRoutesRequest MemAgentCompactConfig
MemAgentMemcgConfig MemHotplugByProbeRequest OnlineCPUMemRequest PauseContainerRequest PullImageRequest
ReadStreamRequest RemoveContainerRequest RemoveStaleVirtiofsShareMountsRequest ReseedRandomDevRequest
ResumeContainerRequest SetGuestDateTimeRequest SetPolicyRequest SignalProcessRequest StartContainerRequest
StartTracingRequest StatsContainerRequest StopTracingRequest TtyWinResizeRequest UpdateContainerRequest
UpdateEphemeralMountsRequest UpdateInterfaceRequest UpdateRoutesRequest WaitProcessRequest
WriteStreamRequest""".split()


def test_the_default_policy_allows_each_of_kata_s_39_requests_once(tmp_path: Path):
    import re

    text = provision(tmp_path, agent_policy="default").read_text("/etc/kata-opa/allow-all.rego")
    rules = re.findall(r"^default (\w+) := true$", text, flags=re.M)
    assert len(KATA_POLICY_RULES) == 39 and sorted(rules) == sorted(KATA_POLICY_RULES)
    assert [line for line in text.splitlines() if line.startswith("default ")] == [f"default {r} := true" for r in rules]
