"""Tiny RPMs for dnf tests: stand-ins named after the packages the RPM recipes install
(systemd, chrony, iptables, dbus, ...), built with rpmbuild, signed with rpmsign, indexed with
createrepo_c and laid out where each recipe's repository URLs point.

They hold just enough for osbuilder's provisioning and validation to find what the real ones
hold: a filesystem package with the usr-merge links, a chrony.conf and chronyd.service, a
systemd binary and units, dbus.socket. They cannot boot; the dnf tests check the tree.
"""

from __future__ import annotations

import base64
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tests.local_repos import GpgKey, run, serve_directory

RPM_DISTROS = ("centos", "cbl-mariner", "fedora")

CHRONY_CONF = "pool 2.centos.pool.ntp.org iburst\ndriftfile /var/lib/chrony/drift\n"
CHRONYD_SERVICE = ("[Unit]\nDescription=NTP client/server\n[Service]\nType=forking\n"
                   "ExecStart=/usr/sbin/chronyd -u chrony $OPTIONS\n[Install]\nWantedBy=multi-user.target\n")
SCRIPT = "#!/bin/sh\nexit 0\n"
# A system group owns a file, as chrony's keys are: rpm looks the name up in the guest's
# /etc/group, and an unprivileged build must keep the id (tests/integration/test_rootless.py).
CHRONY_GID = 998
PASSWD = f"root:x:0:0:root:/root:/bin/bash\nchrony:x:{CHRONY_GID}:{CHRONY_GID}::/var/lib/chrony:/sbin/nologin\n"
GROUP = f"root:x:0:\nchrony:x:{CHRONY_GID}:\n"
UNIT = "[Unit]\nDescription=stand-in\n"
STAND_IN_CA = "-----BEGIN CERTIFICATE-----\nMIIBstandin\n-----END CERTIFICATE-----\n"


@dataclass(frozen=True)
class StandIn:
    name: str
    files: dict[str, str] = field(default_factory=dict)  # path -> content (mode 0755 if it starts with #!)
    links: dict[str, str] = field(default_factory=dict)  # path -> target
    dirs: tuple[str, ...] = ()
    requires: tuple[str, ...] = ("filesystem", "bash")
    provides: tuple[str, ...] = ()
    attrs: dict[str, str] = field(default_factory=dict)  # path -> "mode, user, group" (%attr)
    release: str = "1.osbuildertest"  # a later one stands in for an update


STAND_INS = (
    StandIn("filesystem", requires=(), dirs=("/etc", "/usr/bin", "/usr/sbin", "/usr/lib", "/usr/lib64", "/var",
                                             "/tmp", "/run", "/proc", "/sys", "/dev", "/root"),
            files={"/etc/passwd": PASSWD, "/etc/group": GROUP},
            links={"/bin": "usr/bin", "/sbin": "usr/sbin", "/lib": "usr/lib", "/lib64": "usr/lib64"}),
    # /bin/sh for the stand-ins' scripts (the closure check wants every interpreter present).
    StandIn("bash", files={"/usr/bin/bash": "#!/usr/bin/bash\n"}, links={"/usr/bin/sh": "bash"}),
    StandIn("chrony", files={"/etc/chrony.conf": CHRONY_CONF, "/usr/sbin/chronyd": SCRIPT,
                             "/usr/lib/systemd/system/chronyd.service": CHRONYD_SERVICE, "/etc/chrony.keys": ""},
            attrs={"/etc/chrony.keys": "0640, root, chrony"}),
    StandIn("iptables", files={"/usr/sbin/iptables": SCRIPT}, requires=("filesystem", "bash", "libxtables.so.12()(64bit)")),
    StandIn("iptables-libs", files={"/usr/lib64/libxtables.so.12": "not really a library\n"},
            provides=("libxtables.so.12()(64bit)",)),
    StandIn("iptables-nft", files={"/usr/sbin/iptables-nft": SCRIPT}),
    StandIn("libseccomp", files={"/usr/lib64/libseccomp.so.2": "not really a library\n"}),
    StandIn("dbus", files={"/usr/lib/systemd/system/dbus.socket": UNIT, "/usr/bin/dbus-daemon": SCRIPT}),
    StandIn("systemd", files={"/usr/lib/systemd/systemd": SCRIPT, "/usr/lib/systemd/system/basic.target": UNIT,
                              "/usr/lib/systemd/system/multi-user.target": UNIT},
            links={"/usr/sbin/init": "../lib/systemd/systemd"}, requires=("filesystem", "bash", "dbus")),
    # What --slim removes: a package manager written in Python, and rpm.
    StandIn("python3", files={"/usr/bin/python3": "#!/usr/bin/bash\n"}),
    StandIn("rpm", files={"/usr/bin/rpm": SCRIPT, "/usr/lib/rpm/macros": "%_dbpath /var/lib/rpm\n"}),
    StandIn("dnf", files={"/usr/bin/dnf": "#!/usr/bin/python3\n"}, requires=("filesystem", "python3", "rpm")),
    # veritysetup, which a systemd base's extension mount runs: its own package on CentOS and
    # Fedora, part of cryptsetup on Azure Linux.
    StandIn("veritysetup", files={"/usr/sbin/veritysetup": SCRIPT}),
    StandIn("cryptsetup", files={"/usr/sbin/veritysetup": SCRIPT, "/usr/sbin/cryptsetup": SCRIPT}),
    StandIn("e2fsprogs", files={"/usr/sbin/mkfs.ext4": SCRIPT}),
    # The bundle where the recipes' [trust] table says RPM distributions keep it.
    StandIn("ca-certificates", files={"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem": STAND_IN_CA},
            links={"/etc/pki/tls/certs/ca-bundle.crt": "../../ca-trust/extracted/pem/tls-ca-bundle.pem"}),
    StandIn("kata-packages-uvm", files={"/usr/share/kata-packages-uvm/README": "meta package stand-in\n"},
            requires=("filesystem", "bash", "iptables", "chrony")),
)


def _spec(standin: StandIn) -> str:
    install = []
    files = []
    for directory in standin.dirs:
        install.append(f"mkdir -p %{{buildroot}}{directory}")
        files.append(f"%dir {directory}")
    for path, content in standin.files.items():
        encoded = base64.b64encode(content.encode()).decode()
        mode = "0755" if content.startswith("#!") else "0644"
        install.append(f"mkdir -p %{{buildroot}}{Path(path).parent}")
        install.append(f"echo {encoded} | base64 -d > %{{buildroot}}{path}")
        install.append(f"chmod {mode} %{{buildroot}}{path}")
        files.append(f"%attr({standin.attrs[path]}) {path}" if path in standin.attrs else path)
    for path, target in standin.links.items():
        install.append(f"mkdir -p %{{buildroot}}{Path(path).parent}")
        install.append(f"ln -s {target} %{{buildroot}}{path}")
        files.append(path)
    lines = [f"Name: {standin.name}", "Version: 1.0", f"Release: {standin.release}",
             "Summary: osbuilder test stand-in", "License: MIT", "AutoReqProv: no"]
    lines += [f"Requires: {r}" for r in standin.requires] + [f"Provides: {p}" for p in standin.provides]
    lines += ["", "%description", f"Stand-in for {standin.name} in osbuilder's dnf tests.", "",
              "%install", *install, "", "%files", *files, ""]
    return "\n".join(lines)


def build_rpms(work: Path, arch_rpm: str, key: GpgKey, stand_ins: tuple[StandIn, ...] = STAND_INS) -> Path:
    """Every stand-in (or those given) built for `arch_rpm` and signed by `key`; returns the
    directory of .rpm files."""
    top = work / "rpmbuild"
    work.mkdir(parents=True, exist_ok=True)
    for standin in stand_ins:
        spec = work / f"{standin.name}.spec"
        spec.write_text(_spec(standin))
        run(["rpmbuild", "--quiet", "--define", f"_topdir {top}", "--define", "_build_id_links none",
             "--target", arch_rpm, "-bb", spec], env={"HOME": str(work), "PATH": "/usr/bin:/bin"})
    rpms = sorted((top / "RPMS").rglob("*.rpm"))
    run(["rpmsign", "--define", "__gpg /usr/bin/gpg", "--define", f"_gpg_path {key.home}", "--define", f"_gpg_name {key.name}",
         "--addsign", *rpms], env={"HOME": str(work), "PATH": "/usr/bin:/bin", "GNUPGHOME": str(key.home)})
    out = work / "rpms"
    out.mkdir()
    for rpm in rpms:
        shutil.copy2(rpm, out / rpm.name)
    return out


def build_rpm_repo(directory: Path, rpms: list[Path], key: GpgKey) -> Path:
    """A createrepo_c repository of `rpms` at `directory`, its repomd.xml signed too."""
    directory.mkdir(parents=True, exist_ok=True)
    for rpm in rpms:
        shutil.copy2(rpm, directory / rpm.name)
    run(["createrepo_c", "--quiet", directory])
    key.gpg("--armor", "--detach-sign", "--output", directory / "repodata" / "repomd.xml.asc",
            directory / "repodata" / "repomd.xml")
    return directory


def repo_paths(distro: str, arch: str) -> list[str]:
    """Where the recipe's repository URLs (its update repositories' last) point below its
    mirror, for its default release."""
    from osbuilder.foundation.arch import get_arch
    from osbuilder.rootfs.recipes import load_recipe
    from osbuilder.rootfs.backends.base import InstallRequest
    from osbuilder.rootfs.backends.dnf import DnfBackend

    recipe = load_recipe(distro)
    request = InstallRequest(distro, recipe.default_release, get_arch(arch), (), "", recipe.backend_section, None)
    releasever = DnfBackend().releasever(request)
    # The update repositories too (empty): a build installs from them unless --no-updates.
    return [url.replace("{mirror}", "").replace("$releasever", releasever).replace("$basearch", arch).strip("/")
            for url in recipe.backend_section.repositories + recipe.backend_section.updates]


@contextmanager
def served_rpm_mirror(work: Path, distros: tuple[str, ...] = RPM_DISTROS,
                      arches: tuple[str, ...] = ("x86_64",)) -> Iterator[tuple[str, Path, Path]]:
    """The stand-ins for `arches`, signed, at every repository path of each recipe in `distros`
    (the first holds the packages, the others are empty, as AppStream can be), served on
    127.0.0.1: (its URL, the signing key, another key that signed nothing)."""
    key = GpgKey.create(work / "gnupg", "osbuilder test rpm signing")
    other = GpgKey.create(work / "other-gnupg", "someone else")
    root = work / "mirror"
    for arch in arches:
        rpms = sorted(build_rpms(work / f"build-{arch}", arch, key).iterdir())
        for distro in distros:
            first, *rest = repo_paths(distro, arch)
            build_rpm_repo(root / first, rpms, key)
            for path in rest:
                build_rpm_repo(root / path, [], key)
    with serve_directory(root) as url:
        yield url, key.export(work / "key.asc", armor=True), other.export(work / "other.asc", armor=True)
