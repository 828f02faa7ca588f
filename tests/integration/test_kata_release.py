"""Kata's release pipeline, with osbuilder in place of Kata's shell scripts: the release matrix
(examples/kata-release.toml) builds every variant with Kata's names, from Kata-shaped inputs
(the agent tarball with its extension-mount files, the pause bundle, CoCo components); the
tarballs merge; and a confidential, trimmed guest boots in systemd mode as initrd and image.

Ubuntu's and Mariner's mirrors are out of reach here: the matrix runs with Debian bookworm in
place of Ubuntu resolute (the same apt recipe shape) and local signed RPM repositories in
place of Mariner's (tests/local_repos/rpm.py)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import tomllib
from pathlib import Path

import pytest

from osbuilder.foundation.runner import Runner
from osbuilder.pack.registry import get_packer
from osbuilder.read.kind import recognise_artifact
from tests.conftest import run_cli
from tests.integration.booting import boot
from tests.local_repos.rpm import served_rpm_mirror
from tests.unit.test_agent_sources import EXTENSION_FILES, KATA_TARGET, KATA_UNIT

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
RELEASE_MATRIX = REPO / "examples/kata-release.toml"
SHARE = "opt/kata/share/kata-containers"
CA = b"-----BEGIN CERTIFICATE-----\nMIIBosbuilderregistryca\n-----END CERTIFICATE-----\n"


def kata_tarball(path: Path, members: dict[str, tuple[bytes, int]]) -> Path:
    """A tarball as Kata's release packs its components: `./` names, directory entries, root."""
    plain = path.with_suffix("")
    with tarfile.open(plain, "w", format=tarfile.GNU_FORMAT) as tar:
        directories = {"./"}
        for name in members:
            parts = name.split("/")[1:-1]
            directories.update("./" + "/".join(parts[:i + 1]) + "/" for i in range(len(parts)))
        for name in sorted(directories):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, (data, mode) in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    subprocess.run(["zstd", "-q", "-f", "--rm", str(plain), "-o", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def kata_inputs(tmp_path_factory, agent_x86_64) -> dict[str, Path]:
    """Kata's component tarballs, in the working directory a release job downloads them to."""
    work = tmp_path_factory.mktemp("kata-inputs")
    agent = kata_tarball(work / "kata-static-agent.tar.zst", {
        "./usr/bin/kata-agent": (agent_x86_64.read_bytes(), 0o755),
        "./usr/lib/systemd/system/kata-agent.service": (KATA_UNIT, 0o644),
        "./usr/lib/systemd/system/kata-containers.target": (KATA_TARGET, 0o644),
        **EXTENSION_FILES})
    pause = kata_tarball(work / "kata-static-pause-image.tar.zst", {
        "./pause_bundle/config.json": (b'{"ociVersion": "1.0.2"}\n', 0o644),
        "./pause_bundle/rootfs/pause": (agent_x86_64.read_bytes(), 0o755)})
    coco = kata_tarball(work / "kata-static-coco-guest-components.tar.zst", {
        "./usr/local/bin/attestation-agent": (agent_x86_64.read_bytes(), 0o755),
        "./etc/ocicrypt_config.json": (b"{}\n", 0o644)})
    return {"agent": agent, "pause": pause, "coco": coco, "dir": work}


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def write_matrix(path: Path, data: dict) -> Path:
    lines = ["[defaults]"] + [f"{k} = {toml_value(v)}" for k, v in data["defaults"].items()]
    for target in data["target"]:
        lines += ["", "[[target]]"] + [f"{k} = {toml_value(v)}" for k, v in target.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def for_this_machine(inputs: dict[str, Path], mirror: str, keyring: Path) -> dict:
    """The shipped matrix with Debian in place of Ubuntu, a local repository in place of
    Mariner's, and the inputs at their paths; the s390x job is checked, not built (a foreign
    systemd bootstrap under qemu-user costs minutes; rootfs tests build foreign arches)."""
    data = tomllib.loads(RELEASE_MATRIX.read_text())
    defaults = data["defaults"]
    assert (defaults["distro"], defaults["release"]) == ("ubuntu", "resolute")
    defaults.update(distro="debian", release="bookworm")
    for key, name in (("agent-tarball", "agent"), ("pause-image", "pause"),
                      ("coco-components", "coco")):
        if key in defaults:
            defaults[key] = str(inputs[name])
    targets = []
    for target in data["target"]:
        for key, name in (("agent-tarball", "agent"), ("pause-image", "pause"), ("coco-components", "coco")):
            if key in target:
                assert target[key] == inputs[name].name  # Kata's file names, in the working directory
                target[key] = str(inputs[name])
        if target.get("distro") == "cbl-mariner":
            target.update(mirror=mirror, keyring=str(keyring))
        if target.get("arch") == "s390x":
            continue
        targets.append(target)
    return {"defaults": defaults, "target": targets}


def tar_names(tarball: Path) -> list[str]:
    return subprocess.run(["tar", "--zstd", "-tf", str(tarball)], capture_output=True, text=True,
                          check=True).stdout.split()


# Each variant's Kata names: the versioned file, its link, its root-hash file, its tarball.
EXPECTED = {
    "rootfs-image": ("kata-debian-bookworm.image", "kata-containers.img", "root_hash_base.txt",
                     "kata-static-rootfs-image.tar.zst"),
    "rootfs-image-confidential": ("kata-debian-bookworm-confidential.image", "kata-containers-confidential.img",
                                  "root_hash_confidential.txt", "kata-static-rootfs-image-confidential.tar.zst"),
    "rootfs-image-mariner": ("kata-cbl-mariner-3.0-mariner.image", "kata-containers-mariner.img", None,
                             "kata-static-rootfs-image-mariner.tar.zst"),
    "rootfs-initrd": ("kata-debian-bookworm.initrd", "kata-containers-initrd.img", None,
                      "kata-static-rootfs-initrd.tar.zst"),
    "rootfs-initrd-confidential": ("kata-debian-bookworm-confidential.initrd",
                                   "kata-containers-initrd-confidential.img", None,
                                   "kata-static-rootfs-initrd-confidential.tar.zst"),
    # The composed guest (docs/kata-contract.md, composable guests): two extensions and the base that names them.
    "rootfs-image-coco-extension": ("kata-debian-bookworm-coco-extension.image", "kata-containers-coco-extension.img",
                                    "root_hash_coco-extension.txt", "kata-static-rootfs-image-coco-extension.tar.zst"),
    "rootfs-image-devkit-extension": ("kata-debian-bookworm-devkit-extension.image",
                                      "kata-containers-devkit-extension.img", "root_hash_devkit-extension.txt",
                                      "kata-static-rootfs-image-devkit-extension.tar.zst"),
    "rootfs-image-confidential-base": ("kata-debian-bookworm-confidential-base.image",
                                       "kata-containers-confidential-base.img", "root_hash_confidential-base.txt",
                                       "kata-static-rootfs-image-confidential-base.tar.zst"),
}


@pytest.fixture(scope="module")
def mariner_mirror(tmp_path_factory):
    # A short directory: gpg-agent's socket path must fit in a sockaddr_un.
    with served_rpm_mirror(tmp_path_factory.mktemp("rpm"), ("cbl-mariner",)) as served:
        yield served


def test_the_release_matrix_builds_every_variant_with_kata_s_names(kata_inputs, mariner_mirror, cache_dir, tmp_path):
    mirror, keyring, _ = mariner_mirror
    matrix = write_matrix(tmp_path / "kata-release.toml", for_this_machine(kata_inputs, mirror, keyring))
    printed = run_cli("matrix", "--config", matrix, "--github", "-o", "out")
    assert printed.returncode == 0, printed.stderr
    assert [job["name"] for job in json.loads(printed.stdout)["include"]] == list(EXPECTED)
    out = tmp_path / "out"
    built = run_cli("build", "--config", matrix, "-o", out, "--jobs", "2", "--cache-dir", cache_dir, "--json")
    assert built.returncode == 0, built.stderr + built.stdout
    for name, (versioned, link, root_hash, tarball) in EXPECTED.items():
        share = out / name / SHARE
        expected = {versioned, link} | ({root_hash} if root_hash else set())
        assert set(os.listdir(share)) == expected, name
        assert os.readlink(share / link) == versioned
        names = tar_names(out / name / tarball)
        assert names == sorted(names)
        assert names[:5] == ["./", "./opt/", "./opt/kata/", "./opt/kata/share/", f"./{SHARE}/"]
        assert set(names[5:]) == {f"./{SHARE}/{n}" for n in expected}, name
    # Kata's root-hash collector, by the exact names it asks for.
    for name, label in (("rootfs-image", "base"), ("rootfs-image-confidential", "confidential")):
        member = f"./{SHARE}/root_hash_{label}.txt"
        collected = tmp_path / "collected" / label
        collected.mkdir(parents=True)
        subprocess.run(["tar", "--zstd", "-xf", str(out / name / EXPECTED[name][3]), "-C", str(collected), member],
                       check=True)
        assert (collected / member).read_text().startswith("root_hash=")
    assert (out / "rootfs-image-mariner" / SHARE / EXPECTED["rootfs-image-mariner"][0]).stat().st_size % (2 << 20) == 0
    # inspect reads the ./-named tarball and finds the variant's own root-hash file; the
    # runtime fragment's kernel_params carry that file's line, and check accepts it.
    inspected = run_cli("inspect", out / "rootfs-image-confidential" / EXPECTED["rootfs-image-confidential"][3],
                        "--json")
    assert inspected.returncode == 0, inspected.stderr
    verity = json.loads(inspected.stdout)["layout"]["verity"]
    assert verity["hash_partition"] and verity["root_hash_sidecar"].endswith("/root_hash_confidential.txt")
    for name in ("rootfs-image", "rootfs-image-confidential"):
        fragment = (out / name / "kata-runtime.toml").read_text()
        line = (out / name / SHARE / EXPECTED[name][2]).read_text().strip()
        assert line in fragment, name
        at_output = out / name / "kata-runtime-here.toml"  # the fragment points at /opt/kata, where it installs
        at_output.write_text(fragment.replace("/opt/kata/share/kata-containers", str(out / name / SHARE)))
        checked = run_cli("check", "--runtime-config", at_output)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    # Kata's merge step: every tarball untarred into one tree, no member twice.
    merged = tmp_path / "merged"
    merged.mkdir()
    for name, (_, _, _, tarball) in EXPECTED.items():
        subprocess.run(["tar", "--zstd", "-xf", str(out / name / tarball), "-C", str(merged), "--keep-old-files"],
                       check=True)
    assert set(os.listdir(merged / SHARE)) == set().union(
        *({v, l} | ({r} if r else set()) for v, l, r, _ in EXPECTED.values()))
    check_composed_fragment(out, merged / SHARE)
    # The systemd variants of one distribution share one bootstrap (Kata's Ubuntu carries ca-certificates).
    logs = [(out / f"{name}.log").read_text() for name in
            ("rootfs-image", "rootfs-image-confidential", "rootfs-initrd-confidential")]
    assert sum("using cached bootstrap" in log for log in logs) >= 2
    check_confidential_initrd(out / "rootfs-initrd-confidential" / SHARE / EXPECTED["rootfs-initrd-confidential"][1],
                              tmp_path)


def check_composed_fragment(out: Path, installed: Path) -> None:
    """The composed base's kata-runtime.toml names its image and both extensions, by their
    links and root-hash lines; installed as Kata's merge installs them, `check` passes it."""
    text = (out / "rootfs-image-confidential-base" / "kata-runtime.toml").read_text()
    qemu = tomllib.loads(text)["hypervisor"]["qemu"]
    assert qemu["image"] == f"/{SHARE}/kata-containers-confidential-base.img"
    tables = qemu["guest_extension_images"]
    assert [(t["name"], t["path"]) for t in tables] == [
        ("coco", f"/{SHARE}/kata-containers-coco-extension.img"),
        ("devkit", f"/{SHARE}/kata-containers-devkit-extension.img")]
    for table, name in zip(tables, ("rootfs-image-coco-extension", "rootfs-image-devkit-extension")):
        assert table["verity_params"] == (out / name / SHARE / EXPECTED[name][2]).read_text().strip()
    # The devkit is Debian's own userland, its setuid files allowed and recorded.
    devkit = json.loads(run_cli("inspect", installed / "kata-containers-devkit-extension.img", "--json").stdout)
    assert devkit["extension"]["name"] == "devkit" and devkit["extension"]["root_hash_verified"] is True
    at_install = out / "kata-runtime-installed.toml"
    at_install.write_text(text.replace(f"/{SHARE}", str(installed)))
    checked = run_cli("check", "--runtime-config", at_install, "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert not [f for f in json.loads(checked.stdout)["findings"] if f["code"].startswith("extension-")]


def check_confidential_initrd(link: Path, workdir: Path) -> None:
    """What the confidential initrd holds: the agent tarball whole, the pause bundle at
    /pause_bundle, the CoCo components, the allow-all policy, CA certificates, Kata's trimming."""
    info = recognise_artifact(link)
    view = get_packer(info.kind).open_view(info, workdir, Runner())
    for name, (data, _) in EXTENSION_FILES.items():
        assert view.read_file(name[1:]) == data, name
    assert view.read_file("/pause_bundle/config.json") == b'{"ociVersion": "1.0.2"}\n'
    assert view.read_file("/usr/local/bin/attestation-agent") is not None
    assert b"default GetDiagnosticDataRequest := true" in view.read_file("/etc/kata-opa/default-policy.rego")
    assert b"-----BEGIN CERTIFICATE-----" in view.read_file("/etc/ssl/certs/ca-certificates.crt")
    assert view.stat("/usr/lib/systemd/system/systemd-journald.service") is None
    assert view.stat("/usr/lib/systemd/system-generators/systemd-fstab-generator") is None
    assert b"tmpfs /run tmpfs nodev,nosuid,size=50% 0 0" in view.read_file("/etc/fstab")
    assert view.read_file("/usr/lib/systemd/system/kata-containers.target").endswith(
        b"Requires=systemd-remount-fs.service\n")


def test_the_s390x_initrd_job_runs_systemd_under_kata_s_names(tmp_path):
    """Kata's rootfs-initrd is systemd on s390x: the job resolves so, with the initrd's names."""
    from osbuilder.cli import matrix_target_values
    from osbuilder.config import make_config
    from osbuilder.matrix import load_matrix

    data = tomllib.loads(RELEASE_MATRIX.read_text())
    data["defaults"].update(distro="debian", release="bookworm")
    matrix = load_matrix(write_matrix(tmp_path / "kata-release.toml", data))
    config, _ = make_config(matrix_target_values(matrix, "rootfs-initrd-s390x", {"output": tmp_path / "out",
                                                                                 "probe_agent": True,
                                                                                 "agent_tarball": None}))
    assert (config.rootfs.arch, config.rootfs.init, config.formats) == ("s390x", "systemd", ("initrd",))
    assert get_packer("initrd").release.tarball_stem(config.release.variant) == "kata-static-rootfs-initrd"
    assert config.rootfs.trim_systemd is True and config.rootfs.ca_certificates


def test_a_confidential_trimmed_guest_boots_in_systemd_mode(cache_dir, boot_cache, tmp_path):
    """--confidential under --layout kata (trimmed by default), with a user CA: the initrd and
    the measured image both boot systemd, and /run is the half-memory tmpfs remount-fs made."""
    ca = tmp_path / "registry-ca.pem"
    ca.write_bytes(CA)
    out = tmp_path / "release"
    built = run_cli("build", "--distro", "debian", "--init", "systemd", "--probe-agent", "--confidential",
                    "--ca-bundle", ca, "--layout", "kata", "--format", "initrd,image", "--verity",
                    "--cache-dir", cache_dir, "-o", out)
    assert built.returncode == 0, built.stderr
    share = out / SHARE
    assert {"kata-containers-confidential.img", "kata-containers-initrd-confidential.img",
            "root_hash_confidential.txt"} <= set(os.listdir(share))
    info = recognise_artifact(share / "kata-containers-initrd-confidential.img")
    view = get_packer(info.kind).open_view(info, tmp_path, Runner())
    assert view.read_file("/etc/ssl/certs/ca-certificates.crt").endswith(CA)  # the user's CA, after Debian's
    assert view.read_file("/etc/ssl/certs/ca-certificates.crt").count(b"BEGIN CERTIFICATE") > 100
    assert view.stat("/usr/lib/systemd/system/systemd-udevd.service") is None  # trimmed
    for link in ("kata-containers-initrd-confidential.img", "kata-containers-confidential.img"):
        result, report = boot(share / link, boot_cache)
        assert result.returncode == 0, result.stderr + result.stdout
        probe = report["probe"]
        assert probe["systemd"] is True and probe["init_mode"] is False, link
        # In the 1 GiB boot VM systemd's own /run is 20% (about 200 MiB); Kata's line makes it 50%.
        assert 400 * 1024 < probe["run_kib"] <= 512 * 1024, (link, probe)
