"""The Alpine recipe, installed by osbuilder's Python apk installer from local signed
repositories (Alpine's mirror is out of reach here). The repositories are written by the
tests (tests/local_repos/apk.py), independently of the installer; their busybox package
carries Debian's busybox-static, so the agent-mode initrd boots the probe under qemu."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from osbuilder.foundation.arch import get_arch
from tests.conftest import _extract_busybox, run_cli
from tests.integration.booting import assert_probe, boot, pack
from tests.local_repos import serve_directory
from tests.local_repos.apk import ApkKey, alpine_packages, write_repo

RELEASE_PATH = "v3.22/main"


@pytest.fixture(scope="module")
def apk_mirror(tmp_path_factory, cache_dir):
    """Mirrors under one server: good/ (both arches), tampered/, foreign-index/, forged-index/."""
    work = tmp_path_factory.mktemp("apk")
    key = ApkKey.create(work / "keys", "osbuilder-test")
    stranger = ApkKey.create(work / "stranger", "someone-else")
    forger = ApkKey.create(work / "forger", "osbuilder-test")  # the trusted key's name, another key
    root = work / "mirrors"
    for arch in ("x86_64", "aarch64"):
        busybox = _extract_busybox(get_arch(arch).debian, cache_dir).read_bytes()
        write_repo(root / "good" / RELEASE_PATH, alpine_packages(busybox, arch), arch, key)
    busybox = _extract_busybox("amd64", cache_dir).read_bytes()
    write_repo(root / "foreign-index" / RELEASE_PATH, alpine_packages(busybox, "x86_64"), "x86_64", key, stranger)
    write_repo(root / "forged-index" / RELEASE_PATH, alpine_packages(busybox, "x86_64"), "x86_64", key, forger)
    for name in ("tampered", "corrupt"):
        shutil.copytree(root / "good" / RELEASE_PATH, root / name / RELEASE_PATH)
    # tampered: bash's data segment replaced by a valid gzip stream of changed content.
    apk = root / "tampered" / RELEASE_PATH / "x86_64" / "bash-5.2.37-r0.apk"
    blob = apk.read_bytes()
    starts = [i for i in range(len(blob)) if blob.startswith(b"\x1f\x8b\x08", i)]
    data = zlib.decompressobj(wbits=31).decompress(blob[starts[-1]:])
    apk.write_bytes(blob[:starts[-1]] + gzip.compress(data.replace(b"exit 0", b"exit 1"), mtime=0))
    # corrupt: one flipped bit inside the data segment's gzip stream.
    apk = root / "corrupt" / RELEASE_PATH / "x86_64" / "bash-5.2.37-r0.apk"
    corrupt = bytearray(apk.read_bytes())
    corrupt[-30] ^= 0x01
    apk.write_bytes(bytes(corrupt))
    with serve_directory(root) as url:
        yield url, key.public


def build_alpine(out: Path, mirror: str, keyring: Path, *extra: str):
    return run_cli("rootfs", "--distro", "alpine", "--init", "agent", "--probe-agent", "--mirror", mirror,
                   "--keyring", keyring, "-o", out, "--json", *extra)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_alpine_agent_mode_initrd_installs_from_a_signed_repository_and_boots(apk_mirror, boot_cache, tmp_path,
                                                                              arch):
    url, keyring = apk_mirror
    tree = tmp_path / "rootfs"
    result = build_alpine(tree, f"{url}/good", keyring, "--arch", arch)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["distro"] == "alpine"
    # apk's database, so the guest's own apk can manage the tree.
    installed = (tree / "lib/apk/db/installed").read_text()
    names = [line[2:] for line in installed.splitlines() if line.startswith("P:")]
    assert set(names) == {"alpine-baselayout", "alpine-release", "musl", "busybox", "apk-tools", "alpine-base", "bash",
                          "iptables", "libxtables", "ip6tables", "libseccomp", "bash-busybox-links"}
    assert "V:2.6.0-r0" in installed and "V:2.5.5-r2" not in installed  # the newest libseccomp
    assert names.index("busybox") < names.index("alpine-base")  # dependencies first
    assert "F:bin\n" in installed and "R:busybox\n" in installed and "M:0:0:1777" in installed
    assert (tree / "etc/apk/world").read_text() == "alpine-base\nbash\nip6tables\niptables\nlibseccomp\n"
    assert (tree / "etc/apk/arch").read_text() == f"{arch}\n"
    assert (tree / "etc/apk/repositories").read_text() == f"{url}/good/{RELEASE_PATH}\n"
    assert [p.name for p in (tree / "etc/apk/keys").iterdir()] == ["osbuilder-test.rsa.pub"]
    assert "busybox-1.37.0-r19.Q1" in (tree / "lib/apk/db/scripts.tar").read_bytes().decode(errors="replace")
    # The post-install script ran inside the guest (through qemu-user for aarch64), with its version.
    assert (tree / "etc/busybox/post-install").read_text() == "installed 1.37.0-r19\n"
    # bash's script replaced a file another package installed and removed one.
    assert (tree / "etc/group").read_text() == "root:x:0:root\nbash:x:101:\n" and not (tree / "etc/motd").exists()
    assert (tree / "bin/sh").readlink() == Path("/bin/busybox")
    initrd = pack("initrd", tree, tmp_path / "initrd.img")
    result, report = boot(initrd, boot_cache, "--host-cgroup-driver", "systemd")
    assert_probe(result, report, tree, "systemd", arch=arch)


@pytest.mark.parametrize("mirror, message", [
    ("tampered", "bash-5.2.37-r0.apk: its data does not match the datahash its signed .PKGINFO records"),
    ("corrupt", "bash-5.2.37-r0.apk is corrupt or not in apk format"),
    ("foreign-index", "APKINDEX.tar.gz is signed by key 'someone-else.rsa.pub', which is not trusted"),
    ("forged-index", "APKINDEX.tar.gz: the signature by 'osbuilder-test.rsa.pub' does not match its content"),
])
def test_a_tampered_package_or_a_bad_index_signature_is_refused(apk_mirror, tmp_path, mirror, message):
    url, keyring = apk_mirror
    result = build_alpine(tmp_path / "rootfs", f"{url}/{mirror}", keyring)
    assert result.returncode == 2, result.stderr
    assert message in result.error_lines[-1]
    assert not (tmp_path / "rootfs").exists()


def test_alpine_refuses_systemd_and_arches_without_a_musl_agent(tmp_path):
    systemd = run_cli("rootfs", "--distro", "alpine", "--init", "systemd", "--probe-agent", "-o", tmp_path / "a")
    assert systemd.returncode == 2
    assert systemd.error_lines == ["osbuilder: error: distro 'alpine' supports only init mode 'agent' (got "
                                   "'systemd'); pass --init agent"]
    s390x = run_cli("rootfs", "--distro", "alpine", "--init", "agent", "--probe-agent", "--arch", "s390x",
                    "-o", tmp_path / "b")
    assert s390x.returncode == 2
    assert s390x.error_lines == ["osbuilder: error: distro 'alpine' does not support arch 's390x'; use --arch "
                                 "x86_64 or --arch aarch64"]


def test_alpine_ships_alpines_published_keys():
    from osbuilder.rootfs.recipes import load_recipe

    keys = sorted(Path(load_recipe("alpine").backend_section.keyring).iterdir())
    # 6165ee59 signs x86_64, 616ae350 aarch64.
    assert [p.name for p in keys] == ["alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub",
                                      "alpine-devel@lists.alpinelinux.org-616ae350.rsa.pub"]
    for key in keys:
        text = subprocess.run(["openssl", "pkey", "-pubin", "-in", key, "-noout", "-text"], capture_output=True,
                              text=True, check=True).stdout
        assert "Public-Key: (4096 bit)" in text


def test_alpine_slim_removes_apk_and_its_database_and_records_it(apk_mirror, tmp_path):
    url, keyring = apk_mirror
    tree = tmp_path / "rootfs"
    result = build_alpine(tree, f"{url}/good", keyring, "--slim")
    assert result.returncode == 0, result.stderr
    assert not (tree / "sbin/apk").exists() and not (tree / "lib/apk").exists() and not (tree / "etc/apk").exists()
    assert (tree / "bin/busybox").is_file() and (tree / "sbin/iptables").is_file()  # the recipe's tools stay
    from osbuilder.rootfs.summary import installed_packages, parse_summary

    summary = parse_summary((tree / "var/lib/osbuilder/osbuilder.yaml").read_text())
    marked = {p["name"] for p in installed_packages(summary) if p.get("files-removed") == "yes"}
    assert marked == {"apk-tools"} and len(installed_packages(summary)) == 12
    rules = {rule["rule"]: rule["files"] for rule in summary["slim"]["rules"]}
    assert rules["package apk-tools"] == 2 and rules["/lib/apk"] >= 4 and summary["slim"]["files"] >= 6
