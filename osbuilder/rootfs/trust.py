"""The guest's CA trust store: the distribution's bundle package (--ca-certificates, installed
with the rest of the package set) and the user's own CAs (--ca-bundle), which go where the
distribution's own tool takes local CAs from and are appended to the bundle applications
read, so that the guest trusts them without running that tool. Nothing of the build host's
trust store is ever copied."""

from __future__ import annotations

import hashlib
import stat
from dataclasses import dataclass
from pathlib import Path

from osbuilder.foundation.errors import BuildError
from osbuilder.foundation.fsutil import GuestRoot, sha256_file
from osbuilder.rootfs.recipes import TrustStore


@dataclass(frozen=True)
class UserCa:
    source: str  # the file's name as given
    sha256: str
    anchor: str  # its copy among the distribution's local CAs


@dataclass(frozen=True)
class TrustRecord:
    packages: tuple[str, ...]  # the CA packages installed (none with --ca-bundle alone)
    bundle: str
    bundle_sha256: str  # the bundle as the guest has it, user CAs included
    user_cas: tuple[UserCa, ...]


def install_trust(guest: GuestRoot, store: TrustStore, packages_installed: bool,
                  user_bundles: tuple[str, ...]) -> TrustRecord:
    present = guest.exists(store.bundle)
    if packages_installed and not present:
        raise BuildError(f"the CA package ({', '.join(store.packages)}) left no bundle at {store.bundle}",
                         "fix the recipe's [trust] bundle path")
    # Where the bundle really is (RPM distributions link to it), written as a new inode: the
    # old one may be the build cache's.
    target = guest.guest_path_of(guest.resolve(store.bundle)) if present else store.bundle
    bundle = guest.resolve(target).read_bytes() if present else b""
    mode = stat.S_IMODE(guest.resolve(target).stat().st_mode) if present else 0o644
    added = []
    for index, source in enumerate(user_bundles):
        path = Path(source)
        data = path.read_bytes()
        anchor = f"{store.anchors}/osbuilder-{index:02d}-{path.stem}.crt"
        guest.write_bytes(anchor, data, 0o644)
        if bundle and not bundle.endswith(b"\n"):
            bundle += b"\n"
        bundle += data if data.endswith(b"\n") else data + b"\n"
        added.append(UserCa(path.name, sha256_file(path), anchor))
    if added:
        guest.write_bytes(target, bundle, mode)
    return TrustRecord(packages=store.packages if packages_installed else (), bundle=store.bundle,
                       bundle_sha256=hashlib.sha256(bundle).hexdigest(), user_cas=tuple(added))
