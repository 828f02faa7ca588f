"""A signed Alpine-format (apk v2) repository made by the tests, written independently of
osbuilder's installer from the format's description (docs/kata-contract.md, the apk format).

The packages are stand-ins for the Alpine recipe's package set, plus one real thing: Debian's
busybox-static for the arch as /bin/busybox with its applet links, so the resulting
agent-mode guest boots the probe agent. Keys are made with openssl; signatures are RSA over
SHA-256 of the next gzip stream, as apk-tools writes them.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import tarfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tests.local_repos import run

BUSYBOX_APPLETS = ("/bin/sh", "/bin/mount", "/bin/mkdir", "/bin/stat", "/bin/uname", "/bin/sleep", "/bin/sync",
                   "/bin/cat", "/bin/ls", "/bin/ln", "/bin/grep", "/bin/rm", "/bin/echo", "/sbin/init")


@dataclass(frozen=True)
class ApkKey:
    private: Path
    public: Path

    @property
    def name(self) -> str:
        return self.public.name

    @classmethod
    def create(cls, directory: Path, name: str) -> "ApkKey":
        directory.mkdir(parents=True, exist_ok=True)
        private, public = directory / f"{name}.rsa", directory / f"{name}.rsa.pub"
        run(["openssl", "genrsa", "-out", private, "2048"])
        run(["openssl", "rsa", "-in", private, "-pubout", "-out", public])
        return cls(private, public)

    def sign(self, data: bytes) -> bytes:
        import subprocess

        proc = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.private)], input=data,
                              capture_output=True, check=True)
        return proc.stdout


@dataclass
class ApkPackage:
    name: str
    version: str
    files: dict[str, bytes] = field(default_factory=dict)  # path -> content (0755 if it starts with #! or \x7fELF)
    links: dict[str, str] = field(default_factory=dict)
    dirs: dict[str, int] = field(default_factory=dict)  # path -> mode
    depends: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    install_if: tuple[str, ...] = ()
    scripts: dict[str, bytes] = field(default_factory=dict)  # ".post-install" -> body


def _block(info: tarfile.TarInfo, body: bytes = b"") -> bytes:
    """One tar member with no end-of-archive blocks after it."""
    padding = b"\0" * (-len(body) % tarfile.BLOCKSIZE)
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape") + body + padding


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _signature_segment(key: ApkKey, signed: bytes) -> bytes:
    body = key.sign(signed)
    info = tarfile.TarInfo(f".SIGN.RSA256.{key.name}")
    info.size, info.mode = len(body), 0o644
    return _gz(_block(info, body))


def _data_tar(package: ApkPackage) -> tuple[bytes, int]:
    out = io.BytesIO()
    installed = 0
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, mode in sorted(package.dirs.items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, 1700000000
            tar.addfile(info)
        for path, body in sorted(package.files.items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mtime = len(body), 1700000000
            info.mode = 0o755 if body.startswith((b"#!", b"\x7fELF")) else 0o644
            info.pax_headers = {"APK-TOOLS.checksum.SHA1": hashlib.sha1(body).hexdigest()}
            tar.addfile(info, io.BytesIO(body))
            installed += len(body)
        for path, target in sorted(package.links.items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, target, 0o777, 1700000000
            info.pax_headers = {"APK-TOOLS.checksum.SHA1": hashlib.sha1(target.encode()).hexdigest()}
            tar.addfile(info)
    return out.getvalue(), installed


def build_apk(package: ApkPackage, arch: str, key: ApkKey) -> tuple[bytes, str, int]:
    """The .apk's bytes, its index checksum (Q1...) and its installed size."""
    data, installed = _data_tar(package)
    data_gz = _gz(data)
    info = [f"pkgname = {package.name}", f"pkgver = {package.version}", "pkgdesc = osbuilder test stand-in",
            "url = https://example.invalid", "builddate = 1700000000", f"size = {installed}", f"arch = {arch}",
            f"origin = {package.name}", "license = MIT"]
    info += [f"depend = {d}" for d in package.depends] + [f"provides = {p}" for p in package.provides]
    if package.install_if:
        info.append(f"install_if = {' '.join(package.install_if)}")
    info.append(f"datahash = {hashlib.sha256(data_gz).hexdigest()}")
    pkginfo = ("\n".join(info) + "\n").encode()
    control = tarfile.TarInfo(".PKGINFO")
    control.size, control.mode = len(pkginfo), 0o644
    control_raw = _block(control, pkginfo)
    for name, body in sorted(package.scripts.items()):
        script = tarfile.TarInfo(name)
        script.size, script.mode = len(body), 0o755
        control_raw += _block(script, body)
    control_gz = _gz(control_raw)
    checksum = "Q1" + base64.b64encode(hashlib.sha1(control_gz).digest()).decode()
    return _signature_segment(key, control_gz) + control_gz + data_gz, checksum, installed


def index_record(package: ApkPackage, arch: str, apk: bytes, checksum: str, installed: int) -> str:
    lines = [f"C:{checksum}", f"P:{package.name}", f"V:{package.version}", f"A:{arch}", f"S:{len(apk)}",
             f"I:{installed}", "T:osbuilder test stand-in", "U:https://example.invalid", "L:MIT",
             f"o:{package.name}", "t:1700000000"]
    if package.depends:
        lines.append(f"D:{' '.join(package.depends)}")
    if package.provides:
        lines.append(f"p:{' '.join(package.provides)}")
    if package.install_if:
        lines.append(f"i:{' '.join(package.install_if)}")
    return "\n".join(lines) + "\n"


def write_repo(directory: Path, packages: list[ApkPackage], arch: str, key: ApkKey,
               index_key: ApkKey | None = None) -> Path:
    """<directory>/<arch>/{APKINDEX.tar.gz, *.apk}; the index signed by `index_key` (default `key`)."""
    target = directory / arch
    target.mkdir(parents=True, exist_ok=True)
    records = []
    for package in packages:
        apk, checksum, installed = build_apk(package, arch, key)
        (target / f"{package.name}-{package.version}.apk").write_bytes(apk)
        records.append(index_record(package, arch, apk, checksum, installed))
    index = io.BytesIO()
    with tarfile.open(fileobj=index, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, body in (("DESCRIPTION", b"osbuilder test repository"), ("APKINDEX", "\n".join(records).encode())):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(body), 0o644
            tar.addfile(info, io.BytesIO(body))
    index_gz = _gz(index.getvalue())
    (target / "APKINDEX.tar.gz").write_bytes(_signature_segment(index_key or key, index_gz) + index_gz)
    return directory


def alpine_packages(busybox: bytes, arch: str) -> list[ApkPackage]:
    """Stand-ins for the Alpine recipe's package set (alpine-base bash iptables ip6tables libseccomp)."""
    libc = f"so:libc.musl-{arch}.so.1"
    baselayout_dirs = {"/etc": 0o755, "/proc": 0o555, "/sys": 0o555, "/dev": 0o755, "/tmp": 0o1777, "/run": 0o755,
                       "/var": 0o755, "/root": 0o700, "/bin": 0o755, "/sbin": 0o755, "/lib": 0o755,
                       "/usr": 0o755, "/usr/bin": 0o755, "/usr/sbin": 0o755}
    shell = b"#!/bin/sh\nexit 0\n"
    return [
        ApkPackage("alpine-baselayout", "3.7.0-r0", dirs=baselayout_dirs,
                   files={"/etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n", "/etc/group": b"root:x:0:root\n",
                          "/etc/motd": b"stand-in\n"}),
        ApkPackage("alpine-release", "3.22.2-r0", files={"/etc/alpine-release": b"3.22.2\n"}),
        ApkPackage("musl", "1.2.5-r10", files={f"/lib/ld-musl-{arch}.so.1": b"stand-in\n"},
                   provides=(f"{libc}=1",)),
        ApkPackage("busybox", "1.37.0-r19", files={"/bin/busybox": busybox},
                   links={path: "/bin/busybox" for path in BUSYBOX_APPLETS},
                   provides=("cmd:sh=1.37.0-r19", "/bin/sh"), depends=("alpine-baselayout",),
                   scripts={".post-install": b"#!/bin/sh\n/bin/busybox mkdir -p /etc/busybox\n"
                                             b"echo \"installed $1\" > /etc/busybox/post-install\n"}),
        ApkPackage("apk-tools", "2.14.9-r2", files={"/sbin/apk": shell, "/usr/share/apk/README": b"stand-in\n"},
                   depends=(libc,)),
        ApkPackage("alpine-base", "3.22.2-r0", depends=("alpine-baselayout", "alpine-release", "busybox", "musl>=1.2",
                                                        "apk-tools")),
        # What addgroup does (a new /etc/group renamed over the old), and a deletion: files
        # an earlier package installed, replaced and removed by a script.
        ApkPackage("bash", "5.2.37-r0", files={"/bin/bash": shell}, depends=(libc, "/bin/sh"),
                   scripts={".post-install": b"#!/bin/sh\ncat /etc/group > /etc/group+\n"
                                             b"echo bash:x:101: >> /etc/group+\nmv /etc/group+ /etc/group\n"
                                             b"rm /etc/motd\n"}),
        ApkPackage("iptables", "1.8.11-r1", files={"/sbin/iptables": shell}, depends=(libc, "so:libxtables.so.12")),
        ApkPackage("libxtables", "1.8.11-r1", files={"/usr/lib/libxtables.so.12": b"stand-in\n"},
                   provides=("so:libxtables.so.12=12.0.0",)),
        ApkPackage("ip6tables", "1.8.11-r1", files={"/sbin/ip6tables": shell}, depends=("iptables=1.8.11-r1",)),
        # Two versions: the newest must win.
        ApkPackage("libseccomp", "2.5.5-r2", files={"/usr/lib/libseccomp.so.2": b"old\n"}, depends=(libc,)),
        ApkPackage("libseccomp", "2.6.0-r0", files={"/usr/lib/libseccomp.so.2": b"new\n"}, depends=(libc,)),
        # install_if: pulled in because both busybox and bash are installed; openrc never is.
        ApkPackage("bash-busybox-links", "1.0-r0", files={"/etc/profile.d/bash.sh": b"# stand-in\n"},
                   install_if=("busybox", "bash")),
        ApkPackage("iptables-openrc", "1.8.11-r1", files={"/etc/init.d/iptables": shell},
                   install_if=("iptables", "openrc")),
    ]


@contextmanager
def served_alpine_repo(work: Path, cache: Path, arches: tuple[str, ...] = ("x86_64",)) -> Iterator[tuple[Path, str, Path]]:
    """Alpine 3.22's main repository for `arches` (Debian's busybox-static as busybox), signed
    with a test key and served on 127.0.0.1: (the mirror directory, its URL, the public key)."""
    from osbuilder.foundation.arch import get_arch
    from tests.conftest import _extract_busybox
    from tests.local_repos import serve_directory

    key = ApkKey.create(work / "keys", "osbuilder-test")
    for arch in arches:
        busybox = _extract_busybox(get_arch(arch).debian, cache).read_bytes()
        write_repo(work / "mirror" / "v3.22/main", alpine_packages(busybox, arch), arch, key)
    with serve_directory(work / "mirror") as url:
        yield work / "mirror", url, key.public
