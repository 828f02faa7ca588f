"""An ordinary user builds: no sudo, no root. The test creates a user with subordinate id
ranges (useradd gives them on Debian), builds an initrd and an ext4 image as that user
with Debian's mirror, and compares them with root's build of the same inputs: the same
bytes, so every owner and device node is root's in both."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow

USER = "osbuilder-test"
EPOCH = "1700000000"


@pytest.fixture(scope="module")
def builder_user() -> str:
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", USER], check=True)
    subuid = Path("/etc/subuid").read_text() if Path("/etc/subuid").exists() else ""
    assert any(line.startswith(f"{USER}:") for line in subuid.splitlines()), "useradd gave no subordinate ids"
    return USER


@pytest.fixture
def user_dir(builder_user):
    """A directory the user owns, outside pytest's root-only temporary directories."""
    path = Path(tempfile.mkdtemp(prefix="osbuilder-rootless-"))
    os.chmod(path, 0o755)
    shutil.chown(path, builder_user, builder_user)
    yield path
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


def as_user(user: str, *args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    home = pwd.getpwnam(user).pw_dir
    command = ["runuser", "-u", user, "--", "env", "-i", f"HOME={home}", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
               *(f"{k}={v}" for k, v in (env or {}).items()), str(REPO / ".venv/bin/python"), "-m", "osbuilder", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=1800)


def digests(directory: Path) -> dict[str, str]:
    return {name: hashlib.sha256((directory / name).read_bytes()).hexdigest()
            for name in ("kata-containers-initrd.img", "kata-containers.img")}


def test_an_unprivileged_build_gives_roots_bytes(builder_user, user_dir, agent_x86_64, tmp_path):
    agent = user_dir / "kata-agent"
    shutil.copyfile(agent_x86_64, agent)
    os.chmod(agent, 0o755)
    build = ["build", "--distro", "debian", "--init", "agent", "--agent", str(agent), "--format", "initrd,image"]
    user = as_user(builder_user, *build, "-o", str(user_dir / "out"),
                   env={"SOURCE_DATE_EPOCH": EPOCH, "XDG_CACHE_HOME": str(user_dir / "cache")})
    assert user.returncode == 0, user.stderr
    out = user_dir / "out"
    assert out.stat().st_uid == pwd.getpwnam(builder_user).pw_uid
    assert all(p.stat().st_uid == out.stat().st_uid for p in out.iterdir())
    assert sorted(p.name for p in user_dir.iterdir()) == ["cache", "kata-agent", "out"]  # no staging left
    root = run_cli(*build, "--no-cache", "-o", tmp_path / "root", env={"SOURCE_DATE_EPOCH": EPOCH})
    assert root.returncode == 0, root.stderr
    assert digests(out) == digests(tmp_path / "root")
    # The cache the user's build wrote serves a second unprivileged build the same bytes.
    again = as_user(builder_user, *build, "-o", str(user_dir / "again"),
                    env={"SOURCE_DATE_EPOCH": EPOCH, "XDG_CACHE_HOME": str(user_dir / "cache")})
    assert again.returncode == 0, again.stderr
    assert "using cached bootstrap" in again.stderr
    assert digests(user_dir / "again") == digests(out)


def test_rootfs_as_an_ordinary_user_is_refused(builder_user, user_dir):
    result = as_user(builder_user, "rootfs", "--distro", "debian", "--init", "agent", "--probe-agent",
                     "-o", str(user_dir / "tree"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("osbuilder: error: osbuilder rootfs needs root")
    assert not (user_dir / "tree").exists()


@pytest.fixture(scope="module")
def apk_repo(tmp_path_factory, cache_dir):
    from tests.local_repos.apk import served_alpine_repo

    with served_alpine_repo(tmp_path_factory.mktemp("apk-rootless"), cache_dir) as (_, url, key):
        yield url, key


def test_an_unprivileged_alpine_build_gives_roots_bytes(builder_user, user_dir, apk_repo, tmp_path):
    """The apk installer, scripts included, runs as root of a user namespace with the user's ranges."""
    url, key = apk_repo
    keyring = user_dir / "keys"
    keyring.mkdir()
    shutil.copy(key, keyring / key.name)
    subprocess.run(["chmod", "-R", "a+rX", str(keyring)], check=True)
    build = ["build", "--distro", "alpine", "--init", "agent", "--probe-agent", "--mirror", url, "--keyring",
             str(keyring / key.name), "--format", "initrd,image"]
    user = as_user(builder_user, *build, "-o", str(user_dir / "out"),
                   env={"SOURCE_DATE_EPOCH": EPOCH, "XDG_CACHE_HOME": str(user_dir / "cache")})
    assert user.returncode == 0, user.stderr
    root = run_cli(*build, "--no-cache", "-o", tmp_path / "root", env={"SOURCE_DATE_EPOCH": EPOCH})
    assert root.returncode == 0, root.stderr
    assert digests(user_dir / "out") == digests(tmp_path / "root")


def test_an_unprivileged_alpine_refusal_is_the_same_one_line_error(builder_user, user_dir, apk_repo):
    """The apk installer runs in a user namespace; what it refuses is still bad input."""
    from tests.local_repos.apk import ApkKey

    url, _ = apk_repo
    stranger = ApkKey.create(user_dir / "stranger", "someone-else")
    subprocess.run(["chmod", "-R", "a+rX", str(user_dir / "stranger")], check=True)
    user = as_user(builder_user, "build", "--distro", "alpine", "--init", "agent", "--probe-agent", "--mirror", url,
                   "--keyring", str(stranger.public), "--format", "initrd", "-o", str(user_dir / "refused"),
                   env={"XDG_CACHE_HOME": str(user_dir / "cache")})
    assert user.returncode == 2, user.stderr
    errors = [line for line in user.stderr.splitlines() if line.startswith("osbuilder: error:")]
    assert len(errors) == 1 and "is signed by key 'osbuilder-test.rsa.pub', which is not trusted" in errors[0]
    assert not (user_dir / "refused").exists()


@pytest.fixture(scope="module")
def rpm_mirror(tmp_path_factory):
    from tests.local_repos.rpm import served_rpm_mirror

    with served_rpm_mirror(tmp_path_factory.mktemp("rpm-rootless"), ("centos",)) as mirror:
        yield mirror


def test_an_unprivileged_centos_build_gives_roots_bytes(builder_user, user_dir, rpm_mirror, agent_x86_64, tmp_path):
    """dnf runs as root of a user namespace holding the user's subordinate ids; the stand-ins
    include a file owned by a system group (chrony's keys), which must stay that group's."""
    url, key, _ = rpm_mirror
    keyring = user_dir / key.name
    shutil.copyfile(key, keyring)
    os.chmod(keyring, 0o644)
    agent = user_dir / "kata-agent"
    shutil.copyfile(agent_x86_64, agent)
    os.chmod(agent, 0o755)
    for init in ("agent", "systemd"):
        build = ["build", "--distro", "centos", "--init", init, "--agent", str(agent), "--mirror", url,
                 "--keyring", str(keyring), "--format", "initrd,image"]
        user = as_user(builder_user, *build, "-o", str(user_dir / f"out-{init}"),
                       env={"SOURCE_DATE_EPOCH": EPOCH, "XDG_CACHE_HOME": str(user_dir / "cache")})
        assert user.returncode == 0, user.stderr
        root = run_cli(*build, "--no-cache", "-o", tmp_path / f"root-{init}", env={"SOURCE_DATE_EPOCH": EPOCH})
        assert root.returncode == 0, root.stderr
        assert digests(user_dir / f"out-{init}") == digests(tmp_path / f"root-{init}")
    # Nothing the subordinate ids own is left behind: the user can delete all of it.
    assert sorted(p.name for p in user_dir.iterdir()) == sorted(["cache", "kata-agent", keyring.name, "out-agent",
                                                                 "out-systemd"])
    subprocess.run(["runuser", "-u", builder_user, "--", "rm", "-rf", str(user_dir / "out-agent"),
                    str(user_dir / "cache")], check=True)


@pytest.mark.parametrize("distro, refusal", [
    ("centos", "installing centos with dnf as an ordinary user needs subordinate ids"),
    ("alpine", "installing alpine as an ordinary user needs subordinate ids"),
    ("debian", "installing debian with mmdebstrap as an ordinary user needs subordinate ids"),
])
def test_an_unprivileged_build_without_subordinate_ids_is_refused(request, tmp_path, distro, refusal):
    """A user useradd gave no ranges (--system): one line that names the fix, exit 2."""
    served = {"centos": lambda: request.getfixturevalue("rpm_mirror")[:2],
              "alpine": lambda: request.getfixturevalue("apk_repo")}
    url, key = served[distro]() if distro in served else (None, None)  # Debian's own mirror and keyring
    user = "osbuilder-noids"
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--system", "--create-home", "--shell", "/bin/sh", user], check=True)
    work = Path(tempfile.mkdtemp(prefix="osbuilder-noids-"))
    try:
        source: tuple[str, ...] = ()
        if key is not None:
            shutil.copyfile(key, work / key.name)
            os.chmod(work / key.name, 0o644)
            source = ("--mirror", url, "--keyring", str(work / key.name))
        shutil.chown(work, user, user)
        result = as_user(user, "build", "--distro", distro, "--init", "agent", "--probe-agent", *source,
                         "--format", "initrd", "-o", str(work / "out"), env={"XDG_CACHE_HOME": str(work / "cache")})
        assert result.returncode == 2, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(f"osbuilder: error: {refusal}")
        assert "/etc/subuid" in last
        assert not (work / "out").exists()
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)
