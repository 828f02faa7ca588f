"""The builder container: the Dockerfile built with podman from a base made here, and a real
`osbuilder build` run inside it by its unprivileged user, whose artifacts are the bytes a
root build on this host gives for the same inputs.

No registry is reachable, so the base image is Debian 12 bootstrapped with mmdebstrap and
`podman import`ed. What this machine needs that a usual one does not, kept in the test:
- a containers.conf of the test's own (CONTAINERS_CONF) choosing runc with cgroupfs (crun
  refuses this machine's hybrid cgroup layout) and ulimits no higher than the session's
  (the sandbox lacks CAP_SYS_RESOURCE to raise them), and storage under the test's
  directory (--root, --runroot), so the host's container storage is never touched;
- this machine's CA bundle mounted into the image build, because its HTTPS traffic to PyPI
  goes through a proxy whose certificate authority Debian's bundle does not hold.
The run itself needs only `--cap-add SYS_ADMIN` (newuidmap may not write a user namespace's
id map from inside the container without it): no --privileged, no /dev mount.

The commands are the README's, read from it: its no-registry base and build, and its
`podman run` line, with the test's storage, paths and pinned epoch put in.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow

EPOCH = "1700000000"
CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    work = tmp_path_factory.mktemp("podman")
    (work / "containers.conf").write_text(CONTAINERS_CONF)
    env = {**os.environ, "CONTAINERS_CONF": str(work / "containers.conf")}

    def run(*args: str | Path, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess:
        argv = ["podman", "--root", str(work / "storage"), "--runroot", str(work / "run"), *map(str, args)]
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
        assert not check or proc.returncode == 0, f"{' '.join(argv)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        return proc

    yield run, work
    run("system", "reset", "--force", check=False)
    subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)


def readme_commands(after: str) -> list[list[str]]:
    """The shell commands of the README's first code block after `after`, each split into words."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", readme[readme.index(after):], re.S).group(1)
    return [shlex.split(line) for line in block.replace("\\\n", " ").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def builder_image(podman):
    run, work = podman
    [bootstrap, imported, built] = readme_commands("**With no registry reachable**")
    assert bootstrap[0] == "mmdebstrap" and imported[:2] == ["podman", "import"] and built[:2] == ["podman", "build"]
    base = work / bootstrap[-2]
    subprocess.run([*bootstrap[:-2], str(base), bootstrap[-1]], check=True, capture_output=True)
    run("import", base, imported[-1])
    # This machine's proxy CA, for pip inside the image build (see the module's docstring).
    ca = ["--volume", "/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro"]
    tag = built[built.index("-t") + 1]
    assert built[-1] == "." and tag == "osbuilder"
    output = run(*built[1:-1], *ca, REPO)
    assert f"Successfully tagged localhost/{tag}:latest" in output.stdout + output.stderr
    return tag


def digests(directory: Path) -> dict[str, str]:
    return {name: hashlib.sha256((directory / name).read_bytes()).hexdigest()
            for name in ("kata-containers-initrd.img", "kata-containers.img")}


def test_the_container_runs_osbuilder_as_its_unprivileged_user(podman, builder_image):
    run, _ = podman
    who = run("run", "--rm", "--entrypoint", "id", builder_image)
    assert who.stdout.startswith("uid=1000(builder) gid=1000(builder)")
    version = run("run", "--rm", builder_image, "--version")
    assert version.stdout.startswith("osbuilder ")
    subids = run("run", "--rm", "--entrypoint", "cat", builder_image, "/etc/subuid")
    assert subids.stdout == "builder:100000:65536\n"


def test_a_build_inside_the_container_gives_the_hosts_bytes(podman, builder_image, agent_x86_64, tmp_path):
    """The same inputs (the agent's file name is recorded too) on this host as root."""
    run, _ = podman
    out = tmp_path / "out"
    out.mkdir()
    os.chmod(out, 0o777)  # the container's builder writes here
    shutil.copyfile(agent_x86_64, out / "kata-agent")
    [_, _, command] = readme_commands("## The builder container")
    assert command[:2] == ["podman", "run"]
    words = [f"{out}:/out" if word == "$PWD/out:/out" else word for word in command[2:]]
    image = words.index(builder_image)
    build = words[image + 1:]
    assert build[:1] == ["build"] and build[-2:] == ["-o", "/out/guest"]
    inside = run("run", *words[:image], "-e", f"SOURCE_DATE_EPOCH={EPOCH}", *words[image:], check=False)
    assert inside.returncode == 0, inside.stderr[-4000:]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no staging left
    on_host = [str(out / "kata-agent") if word == "/out/kata-agent" else word for word in build[:-2]]
    host = run_cli(*on_host, "--no-cache", "-o", tmp_path / "host", env={"SOURCE_DATE_EPOCH": EPOCH})
    assert host.returncode == 0, host.stderr
    assert digests(out / "guest") == digests(tmp_path / "host")
