"""Payloads over the rootfs: Kata's guest hooks, the pause bundle, confidential-guest
components (each a tarball, unpacked safely), the agent policy, and an overlay directory
copied last. Each is recorded with its sha256 in osbuilder.yaml and manifest.json."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from osbuilder.foundation.errors import UserError
from osbuilder.foundation.fsutil import GuestRoot, sha256_file
from osbuilder.rootfs.extract import guest_name, safe_extract
from osbuilder.foundation.runner import FILESYSTEM, Runner
from osbuilder.foundation.templates import Templates

POLICY_DIR = "/etc/kata-opa"
DEFAULT_POLICY_LINK = f"{POLICY_DIR}/default-policy.rego"
ALLOW_ALL = "default"  # --agent-policy default: an allow-all policy from templates/


@dataclass(frozen=True)
class PayloadKind:
    """A tarball payload: the setting it comes from, and what it must and may hold. Kata's
    rootfs builder unpacks every one over / (docs/kata-contract.md, release packaging): each carries its own paths."""

    setting: str  # the RootfsOptions field
    flag: str
    required: tuple[str, ...] = ()  # guest paths the tarball must hold (its layout, as Kata ships it)
    allow_devices: bool = False

    def check_layout(self, tarball: Path, names: set[str]) -> None:
        missing = [path for path in self.required if path not in names]
        if missing:
            raise UserError(f"{self.flag} '{tarball}' holds no {missing[0].lstrip('/')}: it is unpacked over /, so "
                            f"it must carry {', '.join(p.lstrip('/') for p in self.required)}",
                            "pass Kata's kata-static-pause-image.tar.zst, or a tarball laid out as it is "
                            "(./pause_bundle/config.json, ./pause_bundle/rootfs/pause)")


PAUSE_BUNDLE = "/pause_bundle"  # where the agent reads the pause container's bundle

TARBALL_PAYLOADS = (
    PayloadKind("guest_hooks", "--guest-hooks"),
    PayloadKind("pause_image", "--pause-image", required=(f"{PAUSE_BUNDLE}/config.json",)),
    PayloadKind("coco_components", "--coco-components"),
)


@dataclass(frozen=True)
class PayloadRecord:
    name: str  # the setting's name: guest_hooks, pause_image, coco_components, agent_policy, overlay
    source: str  # the file or directory's name as given
    sha256: str  # of the tarball or policy file; of the sorted file list and contents for an overlay

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "source": self.source, "sha256": self.sha256}


def check_payload_layouts(options, runner: Runner) -> None:
    """Refuse a payload tarball without the paths its kind needs, before any build work
    (GNU tar lists any compression)."""
    for kind in TARBALL_PAYLOADS:
        tarball = getattr(options, kind.setting)
        if tarball is None or not kind.required:
            continue
        listing = runner.run(["tar", "-tf", str(tarball)], check=False, limit=FILESYSTEM)
        if listing.returncode != 0:
            raise UserError(f"{kind.flag} '{tarball}' is not a readable tarball", f"pass {kind.flag} a tar archive")
        names = {guest_name(Path(tarball), line) for line in listing.stdout.splitlines()}
        kind.check_layout(Path(tarball), {name for name in names if name is not None})


def install_payloads(guest: GuestRoot, options, templates: Templates, workdir: Path,
                     runner: Runner) -> tuple[PayloadRecord, ...]:
    records = []
    for kind in TARBALL_PAYLOADS:
        tarball = getattr(options, kind.setting)
        if tarball is None:
            continue
        safe_extract(Path(tarball), guest, workdir, runner, allow_devices=kind.allow_devices,
                     check_names=lambda names, kind=kind, tarball=tarball: kind.check_layout(Path(tarball), names))
        records.append(PayloadRecord(kind.setting, Path(tarball).name, sha256_file(Path(tarball))))
    if options.agent_policy is not None:
        records.append(install_policy(guest, options.agent_policy, templates))
    if options.overlay is not None:
        records.append(copy_overlay(guest, Path(options.overlay), options.overlay_owner == "root",
                                    runner.privilege.sets_owners))
    return tuple(records)


def install_policy(guest: GuestRoot, policy: str, templates: Templates) -> PayloadRecord:
    """/etc/kata-opa/<name>.rego and the default-policy.rego link to it."""
    if policy == ALLOW_ALL:
        name, text = "allow-all.rego", templates.render("allow-all.rego.j2").encode()
    else:
        path = Path(policy)
        if not path.is_file() or path.suffix != ".rego":
            raise UserError(f"agent policy '{policy}' is not a .rego file", "pass a .rego file, or 'default'")
        name, text = path.name, path.read_bytes()
    guest.write_bytes(f"{POLICY_DIR}/{name}", text, 0o644)
    guest.symlink(DEFAULT_POLICY_LINK, name)
    return PayloadRecord("agent_policy", name, hashlib.sha256(text).hexdigest())


def copy_overlay(guest: GuestRoot, overlay: Path, as_root: bool, chown: bool) -> PayloadRecord:
    """The overlay's files win over the tree's; owners and modes come from the overlay (or
    are root's with --overlay-owner root). Nothing is followed out of the tree."""
    if not overlay.is_dir():
        raise UserError(f"overlay '{overlay}' is not a directory", "pass --overlay a directory")
    digest = hashlib.sha256()
    for directory, dirs, files in os.walk(overlay):
        dirs.sort()
        relative = os.path.relpath(directory, overlay)
        guest_dir = "/" if relative == "." else "/" + relative
        for name in sorted(dirs + files):
            source = Path(directory, name)
            st = source.lstat()
            target = f"{guest_dir.rstrip('/')}/{name}"
            digest.update(target.encode() + b"\0")
            if stat.S_ISLNK(st.st_mode):
                path = guest.symlink(target, os.readlink(source))
                digest.update(os.readlink(source).encode())
            elif stat.S_ISDIR(st.st_mode):
                path = guest.mkdir(target, stat.S_IMODE(st.st_mode))
                os.chmod(path, stat.S_IMODE(st.st_mode))
            elif stat.S_ISREG(st.st_mode):
                path = guest.copy_file(source, target, stat.S_IMODE(st.st_mode))
                digest.update(sha256_file(source).encode())
            else:
                raise UserError(f"overlay '{overlay}' holds {target}, which is no file, directory or link",
                                "remove device nodes and fifos from the overlay")
            if chown:
                uid, gid = (0, 0) if as_root else (st.st_uid, st.st_gid)
                os.chown(path, uid, gid, follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o6000:
                    os.chmod(path, stat.S_IMODE(st.st_mode))  # chown clears setuid/setgid
    return PayloadRecord("overlay", overlay.name, digest.hexdigest())
