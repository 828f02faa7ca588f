"""Agent sources: Kata's agent release tarball (its units win in systemd mode), downloads
through rootfs's own resolution, and pinning of local files."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from osbuilder.config import make_rootfs_options
from osbuilder.foundation.errors import CommandError, UserError
from osbuilder.foundation.fsutil import GuestRoot
from osbuilder.rootfs.provision import Provisioner
from osbuilder.rootfs.summary import parse_summary
from osbuilder.rootfs.stage import resolve_agent, strip_agent
from osbuilder.rootfs.validate import validate_tree
from osbuilder.foundation.runner import Runner
from osbuilder.foundation.templates import Templates
from tests.helpers import fake_bootstrap
from tests.http_server import AGENT, AGENT_SHA

KATA_UNIT = b"[Unit]\nDescription=Kata Containers Agent (from the release tarball)\n" \
            b"Wants=kata-containers.target\n[Service]\nType=simple\nExecStart=/usr/bin/kata-agent\n"
KATA_TARGET = b"[Unit]\nDescription=Kata target (from the release tarball)\nRequires=basic.target\n" \
              b"Requires=kata-agent.service\n"


# What Kata's 2026 agent tarball carries besides the agent and its two units (docs/kata-contract.md,
# release packaging): extension images are mounted by these.
EXTENSION_FILES = {
    "./usr/lib/systemd/system/kata-extension-mount@.service": (b"[Unit]\nDescription=Mount extension %i\n", 0o644),
    "./usr/libexec/kata-extension-mount.sh": (b"#!/bin/sh\necho mount \"$1\"\n", 0o755),
    "./usr/libexec/kata-extension-umount.sh": (b"#!/bin/sh\necho umount \"$1\"\n", 0o755),
    "./usr/lib/systemd/system-generators/kata-extension-mount-generator": (b"#!/bin/sh\nexit 0\n", 0o755),
}


def agent_tarball(path: Path, with_units: bool = True) -> Path:
    """Kata's kata-static-agent tarball as its release packs it (`./` names, directory
    entries): usr/bin/kata-agent, its units and the extension-mount files, zstd-compressed."""
    plain = path.with_suffix("")
    with tarfile.open(plain, "w") as tar:
        members = [("./usr/bin/kata-agent", AGENT, 0o755)]
        if with_units:
            members += [("./usr/lib/systemd/system/kata-agent.service", KATA_UNIT, 0o644),
                        ("./usr/lib/systemd/system/kata-containers.target", KATA_TARGET, 0o644)]
            members += [(name, data, mode) for name, (data, mode) in EXTENSION_FILES.items()]
        directories = sorted({str(Path(name).parent) + "/" for name, _, _ in members} | {"./"})
        for name in directories:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data, mode in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    subprocess.run(["zstd", "-q", "-f", "--rm", str(plain), "-o", str(path)], check=True)
    return path


def provision_from(tmp_path: Path, mode: str, **values) -> GuestRoot:
    root = tmp_path / "rootfs"
    fake_bootstrap(root, with_systemd=mode == "systemd")
    shutil.copy("/bin/busybox", root / "usr/bin/sh")  # the extension-mount scripts' interpreter, as Debian's dash is
    options, recipe = make_rootfs_options({"distro": "debian", "init": mode, "arch": "x86_64", **values})
    options = dataclasses.replace(options, source_date_epoch=1700000000)
    work = tmp_path / "work"
    work.mkdir()
    # As build_rootfs_into does (it strips while the bootstrap runs).
    agent = strip_agent(resolve_agent(options, work, Runner()), options, work, Runner())
    guest = GuestRoot(root)
    Provisioner(guest, options, recipe, agent, Templates()).run()
    validate_tree(guest, mode, options.target, agent)
    return guest


@pytest.mark.parametrize("mode", ["agent", "systemd"])
def test_the_agent_tarball_installs_its_agent_and_units(tmp_path: Path, mode: str):
    tarball = agent_tarball(tmp_path / "kata-static-agent.tar.zst")
    guest = provision_from(tmp_path, mode, agent_tarball=str(tarball))
    installed = guest.resolve("/sbin/init" if mode == "agent" else "/usr/bin/kata-agent")
    assert hashlib.sha256(installed.read_bytes()).hexdigest() == AGENT_SHA
    # The whole tarball comes along in both modes, as Kata's rootfs builder unpacks it.
    assert guest.read_text("/usr/lib/systemd/system/kata-agent.service") == KATA_UNIT.decode()
    assert guest.read_text("/usr/lib/systemd/system/kata-containers.target") == KATA_TARGET.decode()
    for name, (data, file_mode) in EXTENSION_FILES.items():
        path = guest.resolve(name[1:])
        assert path.read_bytes() == data and stat.S_IMODE(path.stat().st_mode) == file_mode, name
    if mode == "agent":  # moved to /sbin/init, as Kata's builder does: no second agent to mistake for it
        assert not guest.lexists("/usr/bin/kata-agent")
    summary = guest.read_text("/var/lib/osbuilder/osbuilder.yaml")
    assert 'url: "file:kata-static-agent.tar.zst"' in summary and AGENT_SHA in summary
    recorded = parse_summary(summary)["agent"]["tarball-files"]
    assert recorded == sorted(["/usr/bin/kata-agent", "/usr/lib/systemd/system/kata-agent.service",
                               "/usr/lib/systemd/system/kata-containers.target",
                               *(name[1:] for name in EXTENSION_FILES)])


def test_without_units_the_tarball_agent_gets_osbuilders(tmp_path: Path):
    tarball = agent_tarball(tmp_path / "agent.tar.zst", with_units=False)
    guest = provision_from(tmp_path, "systemd", agent_tarball=str(tarball))
    assert "Description=Kata Containers Agent\n" in guest.read_text("/usr/lib/systemd/system/kata-agent.service")


def test_a_tarball_without_the_agent_is_refused(tmp_path: Path):
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w") as tar:
        tar.addfile(tarfile.TarInfo("./usr/share/doc"), None)
    with pytest.raises(UserError, match="holds no usr/bin/kata-agent"):
        provision_from(tmp_path, "agent", agent_tarball=str(empty))


def test_a_downloaded_agent_is_pinned(server, tmp_path: Path):
    tarball = agent_tarball(tmp_path / "kata-static-agent.tar.zst")
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    with pytest.raises(UserError, match="not the pinned"):
        provision_from(tmp_path, "agent", agent=f"{server}/agent", agent_sha256=digest)
    guest = provision_from(tmp_path / "ok", "agent", agent=f"{server}/agent", agent_sha256=AGENT_SHA)
    assert f'url: "{server}/agent"' in guest.read_text("/var/lib/osbuilder/osbuilder.yaml")


def test_agent_sources_exclude_each_other(tmp_path: Path):
    with pytest.raises(UserError, match="--agent and --agent-tarball exclude each other"):
        make_rootfs_options({"distro": "debian", "init": "agent", "agent": "/bin/busybox", "agent_tarball": "x"})


def test_the_agent_is_stripped_unless_asked_not_to(tmp_path: Path):
    """An agent with debugging sections loses them; the summary records the bytes installed."""
    unstripped = tmp_path / "kata-agent"
    notes = tmp_path / "notes"
    notes.write_bytes(b"debugging data " * 1000)
    subprocess.run(["objcopy", "--add-section", f".debug_osbuilder={notes}", "/bin/busybox", str(unstripped)],
                   check=True)
    assert hashlib.sha256(unstripped.read_bytes()).hexdigest() != AGENT_SHA
    guest = provision_from(tmp_path / "stripped", "agent", agent=str(unstripped))
    installed = guest.resolve("/sbin/init").read_bytes()
    assert b"debugging data" not in installed and len(installed) < unstripped.stat().st_size
    digest = hashlib.sha256(installed).hexdigest()
    assert f'sha256: "{digest}"' in guest.read_text("/var/lib/osbuilder/osbuilder.yaml")
    kept = provision_from(tmp_path / "kept", "agent", agent=str(unstripped), strip=False)
    assert kept.resolve("/sbin/init").read_bytes() == unstripped.read_bytes()


STAND_IN_MAKEFILE = """# A stand-in for Kata's src/agent Makefile: it records how it was called and "builds" a
# static binary the tests provide (crates cannot be downloaded on these machines).
all:
\\techo "build ARCH=$(ARCH) LIBC=$(LIBC) INIT=$(INIT) SECCOMP=$(SECCOMP) AGENT_POLICY=$(AGENT_POLICY)" >> calls.log
\\tmkdir -p target && cp prebuilt-agent target/kata-agent

install:
\\techo "install DESTDIR=$(DESTDIR) LIBC=$(LIBC) INIT=$(INIT)" >> calls.log
\\tinstall -D -m 0755 target/kata-agent $(DESTDIR)/usr/bin/kata-agent
\\tinstall -D -m 0644 kata-agent.service $(DESTDIR)/usr/lib/systemd/system/kata-agent.service
"""


def stand_in_source(tmp_path: Path) -> Path:
    source = tmp_path / "src-agent"
    source.mkdir()
    (source / "Makefile").write_text(STAND_IN_MAKEFILE.replace("\\t", "\t"))
    (source / "prebuilt-agent").write_bytes(AGENT)
    (source / "kata-agent.service").write_bytes(KATA_UNIT)
    return source


@pytest.mark.parametrize("mode,init_flag", [("agent", "yes"), ("systemd", "no")])
def test_the_agent_is_built_from_source_with_kata_s_make_variables(tmp_path: Path, mode: str, init_flag: str):
    source = stand_in_source(tmp_path)
    guest = provision_from(tmp_path / "tree", mode, agent_source=source, seccomp=False, strip=False)
    calls = (source / "calls.log").read_text().splitlines()
    assert calls[0] == f"build ARCH=x86_64 LIBC=musl INIT={init_flag} SECCOMP=no AGENT_POLICY=no"
    install = calls[1].split()
    assert install[0] == "install" and install[1].startswith("DESTDIR=") and install[1].endswith("/agent-install")
    assert not install[1].startswith(f"DESTDIR={guest.root}"), "make install must not write over the rootfs"
    installed = guest.resolve("/sbin/init" if mode == "agent" else "/usr/bin/kata-agent")
    assert hashlib.sha256(installed.read_bytes()).hexdigest() == AGENT_SHA
    if mode == "systemd":  # the unit make install placed wins, as with the agent tarball
        assert guest.read_text("/usr/lib/systemd/system/kata-agent.service") == KATA_UNIT.decode()
    assert 'url: "source:src-agent"' in guest.read_text("/var/lib/osbuilder/osbuilder.yaml")


@pytest.mark.parametrize("arch,libc", [("x86_64", "musl"), ("aarch64", "musl"), ("ppc64le", "gnu"), ("s390x", "gnu")])
def test_make_variables_follow_the_arch_s_rust_target(arch: str, libc: str):
    from osbuilder.foundation.arch import get_arch
    from osbuilder.rootfs.agent import AgentBuild

    assert AgentBuild(get_arch(arch), False, False, True).make_variables() == [
        f"ARCH={arch}", f"LIBC={libc}", "INIT=no", "SECCOMP=no", "AGENT_POLICY=yes"]


def test_the_source_build_takes_kata_s_release_variables(tmp_path: Path, monkeypatch):
    """LIBC=gnu for cbl-mariner (its recipe says so), static libseccomp with SECCOMP, and
    INIT_DATA / USE_DEVMAPPER passed through from the environment when set."""
    libseccomp = tmp_path / "libseccomp"
    libseccomp.mkdir()
    (libseccomp / "libseccomp.a").write_bytes(b"!<arch>\n")
    source = tmp_path / "src"
    source.mkdir()
    monkeypatch.setenv("INIT_DATA", "yes")
    monkeypatch.delenv("USE_DEVMAPPER", raising=False)
    for distro, libc in (("cbl-mariner", "gnu"), ("debian", "musl")):
        options, _ = make_rootfs_options({"distro": distro, "init": "agent", "arch": "x86_64",
                                          "agent_source": source, "libseccomp_lib_path": libseccomp})
        assert options.agent_libc == (libc if distro == "cbl-mariner" else None)
        from osbuilder.rootfs.agent import AgentBuild

        build = AgentBuild(options.target, True, options.seccomp, False, libc=options.agent_libc,
                           libseccomp_lib_path=options.libseccomp_lib_path,
                           environment=options.agent_build_environment)
        assert build.make_variables() == ["ARCH=x86_64", f"LIBC={libc}", "INIT=yes", "SECCOMP=yes", "AGENT_POLICY=no",
                                          "LIBSECCOMP_LINK_TYPE=static", f"LIBSECCOMP_LIB_PATH={libseccomp}",
                                          "INIT_DATA=yes"]
    monkeypatch.setenv("LIBSECCOMP_LIB_PATH", str(libseccomp))  # Kata's own variable works too
    options, _ = make_rootfs_options({"distro": "debian", "init": "agent", "agent_source": source})
    assert options.libseccomp_lib_path == libseccomp
    monkeypatch.delenv("LIBSECCOMP_LIB_PATH")
    with pytest.raises(UserError, match="links libseccomp statically") as refused:
        make_rootfs_options({"distro": "debian", "init": "agent", "agent_source": source})
    assert "--libseccomp-lib-path" in refused.value.hint
    with pytest.raises(UserError, match="holds no libseccomp.a"):
        make_rootfs_options({"distro": "debian", "init": "agent", "agent_source": source,
                             "libseccomp_lib_path": tmp_path})


def test_a_failing_agent_build_is_one_error(tmp_path: Path):
    source = tmp_path / "broken"
    source.mkdir()
    (source / "Makefile").write_text("all:\n\tfalse\n")
    with pytest.raises(CommandError, match="the agent's build failed"):
        provision_from(tmp_path / "tree", "agent", agent_source=source, seccomp=False)

