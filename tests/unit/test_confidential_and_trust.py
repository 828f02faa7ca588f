"""--confidential, --ca-certificates, --ca-bundle and Kata's trimming, on small trees
provisioned by the real provisioning code (the booted proofs are in tests/integration)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from pathlib import Path

import pytest

from osbuilder.config import make_config, make_rootfs_options
from osbuilder.foundation.errors import UserError
from osbuilder.foundation.fsutil import GuestRoot
from osbuilder.rootfs.agent import check_agent
from osbuilder.rootfs.confidential import add_to_unit_section
from osbuilder.rootfs.provision import Provisioner
from osbuilder.rootfs.summary import parse_summary
from osbuilder.rootfs.validate import validate_tree
from osbuilder.foundation.runner import Runner
from osbuilder.foundation.templates import Templates
from tests.helpers import fake_bootstrap

AGENT = Path("/bin/busybox")
CA = b"-----BEGIN CERTIFICATE-----\nMIIBosbuildertestca\n-----END CERTIFICATE-----\n"
SYSTEM_CA = b"-----BEGIN CERTIFICATE-----\nMIIBdistributionca\n-----END CERTIFICATE-----\n"
BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def provision(tmp_path: Path, init: str = "systemd", with_bundle: bool = True, **values) -> GuestRoot:
    """As a Debian bootstrap that installed ca-certificates would leave it (its bundle present)."""
    root = tmp_path / "rootfs"
    fake_bootstrap(root, with_systemd=init == "systemd")
    (root / "etc/fstab").write_text("# UNCONFIGURED FSTAB FOR BASE SYSTEM\ntmpfs /run tmpfs defaults 0 0\n"
                                    "proc /proc proc defaults 0 0\n")
    if with_bundle:
        (root / "etc/ssl/certs").mkdir(parents=True)
        (root / "etc/ssl/certs/ca-certificates.crt").write_bytes(SYSTEM_CA)
    options, recipe = make_rootfs_options({"distro": "debian", "init": init, "agent": str(AGENT), "arch": "x86_64",
                                           **values})
    options = dataclasses.replace(options, source_date_epoch=1700000000)
    guest = GuestRoot(root)
    agent = check_agent(AGENT, options.target)
    Provisioner(guest, options, recipe, agent, Templates(), (), tmp_path, Runner()).run()
    validate_tree(guest, init, options.target, agent)
    return guest


def summary(guest: GuestRoot) -> dict:
    return parse_summary(guest.read_text("/var/lib/osbuilder/osbuilder.yaml"))


def test_a_confidential_guest_gets_kata_s_run_tmpfs_and_remount_dependency(tmp_path: Path):
    guest = provision(tmp_path, confidential=True)
    fstab = guest.read_text("/etc/fstab").splitlines()
    assert [line for line in fstab if " /run " in line] == ["tmpfs /run tmpfs nodev,nosuid,size=50% 0 0"]
    assert "proc /proc proc defaults 0 0" in fstab  # the other lines stay
    target = guest.read_text("/usr/lib/systemd/system/kata-containers.target")
    assert target.rstrip("\n").endswith("Requires=systemd-remount-fs.service")
    assert target.count("Requires=systemd-remount-fs.service") == 1
    recorded = summary(guest)
    assert recorded["confidential"] == "yes"
    assert recorded["ca-certificates"]["packages"] == ["ca-certificates"]  # implied
    assert "ca-certificates" in recorded["base-distro"]["packages"]["default"]
    plain = summary(provision(tmp_path / "plain"))
    assert plain["confidential"] == "no" and "ca-certificates" not in plain


def test_confidential_is_systemd_mode_only_and_names_the_variant(tmp_path: Path):
    for init in ("agent", "launcher"):
        with pytest.raises(UserError, match="--confidential needs systemd") as refused:
            make_rootfs_options({"distro": "debian", "init": init, "agent": str(AGENT), "confidential": True,
                                 **({"launcher": str(AGENT)} if init == "launcher" else {})})
        assert "--init systemd" in refused.value.hint
    config, _ = make_config({"distro": "debian", "init": "systemd", "agent": str(AGENT), "confidential": True,
                             "layout": "kata", "formats": ("image",), "verity": True, "output": tmp_path / "o"})
    assert config.release.variant == "confidential" and config.packing["image"].root_hash_file == \
        "root_hash_confidential.txt"
    assert config.rootfs.trim_systemd is True  # Kata always trims
    kept, _ = make_config({"distro": "debian", "init": "systemd", "agent": str(AGENT), "layout": "kata",
                           "trim_systemd": False, "output": tmp_path / "o"})
    assert kept.rootfs.trim_systemd is False
    plain, _ = make_config({"distro": "debian", "init": "systemd", "agent": str(AGENT), "output": tmp_path / "o"})
    assert plain.rootfs.trim_systemd is None and plain.release.variant is None


def test_the_user_s_ca_joins_the_guest_s_trust_store(tmp_path: Path):
    ca = tmp_path / "registry-ca.pem"
    ca.write_bytes(CA)
    guest = provision(tmp_path / "tree", ca_certificates=True, ca_bundle=(str(ca),))
    bundle = guest.resolve(BUNDLE).read_bytes()
    assert bundle == SYSTEM_CA + CA
    anchor = "/usr/local/share/ca-certificates/osbuilder-00-registry-ca.crt"
    assert guest.resolve(anchor).read_bytes() == CA
    recorded = summary(guest)["ca-certificates"]
    assert recorded == {"packages": ["ca-certificates"], "bundle": BUNDLE,
                        "sha256": hashlib.sha256(bundle).hexdigest(),
                        "user-cas": [{"source": "registry-ca.pem", "sha256": hashlib.sha256(CA).hexdigest(),
                                      "anchor": anchor}]}
    # Without the package the bundle holds the user's CAs alone.
    alone = provision(tmp_path / "alone", with_bundle=False, ca_bundle=(str(ca),))
    assert alone.resolve(BUNDLE).read_bytes() == CA
    assert summary(alone)["ca-certificates"]["packages"] == []


def test_ca_options_are_checked_before_any_work(tmp_path: Path):
    der = tmp_path / "ca.der"
    der.write_bytes(b"\x30\x82\x01\x0a")
    with pytest.raises(UserError, match="holds no PEM certificate"):
        make_rootfs_options({"distro": "debian", "init": "systemd", "agent": str(AGENT), "ca_bundle": (str(der),)})
    with pytest.raises(UserError, match="does not exist"):
        make_rootfs_options({"distro": "debian", "init": "systemd", "agent": str(AGENT),
                             "ca_bundle": (str(tmp_path / "missing.pem"),)})


def test_the_ca_bundle_flag_repeats(tmp_path: Path):
    from tests.conftest import run_cli

    first, second = tmp_path / "a.pem", tmp_path / "b.der"
    first.write_bytes(CA)
    second.write_bytes(b"not pem")
    result = run_cli("rootfs", "--distro", "debian", "--init", "systemd", "--agent", AGENT, "--ca-bundle", first,
                     "--ca-bundle", second, "-o", tmp_path / "out")
    assert result.returncode == 2 and f"--ca-bundle '{second}' holds no PEM certificate" in result.stderr


def test_trimming_removes_kata_s_names_anywhere_in_the_tree(tmp_path: Path):
    root = tmp_path / "rootfs"
    fake_bootstrap(root, with_systemd=True)
    planted = ["usr/lib/systemd/system/systemd-journald.service", "usr/lib/systemd/system/systemd-udevd.socket",
               "usr/lib/systemd/system/systemd-coredump@.service", "usr/lib/systemd/system/systemd-tmpfiles-cleanup.timer",
               "usr/lib/systemd/system-generators/systemd-fstab-generator",
               "usr/lib/systemd/system-generators/systemd-gpt-auto-generator"]
    for path in planted:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("x\n")
    # A /lib path of a tree that does not merge /usr, and the .wants/ links that enable them.
    (root / "lib").unlink()
    shutil.copytree(root / "usr/lib", root / "lib", symlinks=True)
    wants = root / "etc/systemd/system/sysinit.target.wants"
    wants.mkdir(parents=True)
    os.symlink("/lib/systemd/system/systemd-journald.service", wants / "systemd-journald.service")
    os.symlink("/lib/systemd/system/gone.service", wants / "systemd-random-seed.service")  # dangling
    (wants / "systemd-journald.service.d").mkdir()  # a directory of that family's name stays
    options, recipe = make_rootfs_options({"distro": "debian", "init": "systemd", "agent": str(AGENT),
                                           "trim_systemd": True})
    guest = GuestRoot(root)
    Provisioner(guest, options, recipe, check_agent(AGENT, options.target), Templates()).run()
    for path in planted:
        assert not guest.lexists(f"/usr/{path.removeprefix('usr/')}") and not guest.lexists(
            "/" + path.replace("usr/lib", "lib", 1)), path
    assert not os.path.lexists(wants / "systemd-journald.service")
    assert not os.path.lexists(wants / "systemd-random-seed.service")
    assert (wants / "systemd-journald.service.d").is_dir()
    assert guest.exists("/usr/lib/systemd/system/kata-agent.service")
    assert guest.exists("/lib/systemd/system/basic.target")  # what is not Kata's to trim stays


def test_add_to_unit_section_keeps_other_sections():
    text = "[Unit]\nDescription=x\n\n[Install]\nWantedBy=y\n"
    assert add_to_unit_section(text, "Requires=z\n") == "[Unit]\nDescription=x\nRequires=z\n\n[Install]\nWantedBy=y\n"
    assert add_to_unit_section("Description=x\n", "Requires=z\n") == "[Unit]\nRequires=z\nDescription=x\n"


def test_a_matrix_starts_one_target_of_each_bootstrap_first(tmp_path: Path):
    """Kata's release set: the variants that share a bootstrap wait for it, so the distinct
    bootstraps start first, side by side; the file's order is kept within each group."""
    from osbuilder.cli import bootstrap_identity, matrix_target_values
    from osbuilder.matrix import bootstrap_first, load_matrix

    matrix_file = tmp_path / "release.toml"
    matrix_file.write_text('[defaults]\ndistro = "debian"\nagent = "/bin/busybox"\nca-certificates = true\n'
                           '[[target]]\nname = "image"\ninit = "systemd"\n'
                           '[[target]]\nname = "image-confidential"\ninit = "systemd"\nconfidential = true\n'
                           '[[target]]\nname = "initrd"\ninit = "agent"\n'
                           '[[target]]\nname = "initrd-confidential"\ninit = "systemd"\nconfidential = true\n'
                           '[[target]]\nname = "uncached"\ninit = "agent"\nno-cache = true\n')
    matrix = load_matrix(matrix_file)
    groups = {}
    for target in matrix.targets:
        config, recipe = make_config(matrix_target_values(matrix, target.name, {"output": tmp_path / "out"}))
        groups[target.name] = bootstrap_identity(config, recipe) or target.name
    assert groups["image"] == groups["image-confidential"] == groups["initrd-confidential"] != groups["initrd"]
    assert bootstrap_first([t.name for t in matrix.targets], groups) == [
        "image", "initrd", "uncached", "image-confidential", "initrd-confidential"]
