"""Kata's release layout (docs/kata-contract.md, release packaging): a directory or tarball holding
`kata-containers.img` / `kata-containers-initrd.img` links to the versioned artifacts, with
`root_hash_<label>.txt` beside a verity image (older osbuilder wrote `root_hash.txt`).
Reading one back for inspect and check, and writing one (and its tarballs, named as Kata's
own) for `build --layout kata`."""

from __future__ import annotations

import dataclasses
import os
import re
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from osbuilder.foundation.documents import DAMAGED_ARCHIVE
from osbuilder.foundation.errors import UserError
from osbuilder.foundation.fsutil import sha256_file
from osbuilder.pack.artifact import Artifact
from osbuilder.pack.compress import get_codec
from osbuilder.pack.registry import PACKERS, get_packer
from osbuilder.read.kind import packed_artifact
from osbuilder.rootfs.extract import check_member, guest_name
from osbuilder.foundation.runner import FILESYSTEM, Runner
from osbuilder.foundation.settings import as_path, setting
from osbuilder.read.tarballs import plain_tarball

MAX_DEPTH = 6  # opt/kata/share/kata-containers/ and a little more


def release_links() -> tuple[str, ...]:
    """The names the runtime's configuration points at, as the packers give them."""
    return tuple(link for packer in PACKERS.values() if (link := packer.release.link_name(None)))


def _link_globs() -> tuple[str, ...]:
    """Every link name with any variant suffix."""
    return tuple(packer.release.link.format(variant="*") for packer in PACKERS.values() if packer.release.link)


def _is_link_name(name: str) -> bool:
    return any(Path(name).match(glob) for glob in _link_globs())


def _is_release_member(name: str) -> bool:
    """A name a release gives: a link, a versioned artifact or a root hash."""
    versioned = tuple(f"kata-*.{packer.release.suffix}" for packer in PACKERS.values())
    return _is_link_name(name) or Path(name).name.startswith("root_hash") or \
        any(Path(name).match(glob) for glob in versioned)


def _is_rootfs(path: Path) -> bool:
    return any((path / name).exists() or (path / name).is_symlink() for name in ("sbin", "etc", "usr"))


def _links_in(root: Path) -> list[Path]:
    """The links of a release directory: at its top (a plain build's output, or the share
    directory itself), or in <prefix>/share/kata-containers/ below it (the kata layout, a
    tarball's tree). Images elsewhere in the tree are not the release's."""
    found = []
    for glob in _link_globs():
        found += root.glob(glob)
        for depth in range(MAX_DEPTH - 1):
            found += root.glob("/".join(["*"] * depth + ["share", "kata-containers", glob]))
    return sorted(set(found))


def _inside(root: Path, link: Path) -> Path:
    """The link's target, which must stay inside the release."""
    target = link.resolve()
    if not target.is_relative_to(root.resolve()):
        raise UserError(f"'{link}' points outside the release ({target})", "pass a release whose links stay inside it")
    if not target.is_file():
        raise UserError(f"'{link}' points at '{target}', which does not exist", "pass a complete release")
    return link


def _extract(tarball: Path, workdir: Path, runner: Runner) -> tuple[Path, set[str]] | None:
    """The release's artifacts, links and sidecars out of a tarball, or None when the file is
    no tarball (GNU tar reads any compression it is in; listing stops at the first header).
    Only the needed members are extracted, through tarfile's 'data' filter: no absolute
    paths, no '..', no links that leave the tree."""
    listing = runner.run(["tar", "-tf", str(tarball)], check=False, limit=FILESYSTEM)
    if listing.returncode != 0 or not listing.stdout.strip():
        return None  # an ISO's zeroed system area reads as an empty tar: no members, no tarball
    names = {n for n in listing.stdout.splitlines() if Path(n).name.startswith(("kata-", "root_hash"))}
    if not any(_is_link_name(n) for n in names):
        if not any(_is_release_member(n) for n in names) and packed_artifact(tarball) is not None:
            return None  # nothing of Kata's in it: a tar some packer writes, not a release
        raise UserError(f"tarball '{tarball}' holds no {' or '.join(release_links())}",
                        "pass a Kata release tarball such as kata-static-rootfs-image.tar.zst")
    plain = plain_tarball(tarball, workdir, runner)
    root = Path(tempfile.mkdtemp(prefix="release-", dir=workdir))  # one per release checked
    try:
        with tarfile.open(plain) as archive:
            wanted = [m for m in archive.getmembers() if m.name in names]
            for member in wanted:  # what tarfile's 'data' filter does (Debian 12's Python 3.11.2 lacks it)
                name = guest_name(tarball, member.name)
                if name is not None:
                    check_member(tarball, member, name, allow_devices=False)
                member.mode &= 0o755
                member.uid, member.gid = runner.privilege.own_ids()
                member.uname = member.gname = ""
            archive.extractall(root, members=wanted, numeric_owner=True)
    except (*DAMAGED_ARCHIVE, OSError) as exc:
        raise UserError(f"tarball '{tarball}' cannot be read ({exc})", "pass a complete release tarball") from None
    finally:
        if plain != tarball:
            plain.unlink(missing_ok=True)
    return root, names


def release_artifacts(path: Path, workdir: Path, runner: Runner) -> list[Path] | None:
    """The artifacts a Kata release holds (through its links), or None when `path` is not a
    release (a single artifact or a rootfs)."""
    members = release_members(path, workdir, runner)
    return None if members is None else [link for link, _ in members]


def release_members(path: Path, workdir: Path, runner: Runner) -> list[tuple[Path, str]] | None:
    """release_artifacts, each with the name a report gives it: its path in a directory, or
    TARBALL:MEMBER for one read out of a tarball (whose extracted copy is gone afterwards)."""
    path = Path(path)
    tar_names: set[str] = set()
    if path.is_dir():
        if _is_rootfs(path):
            return None
        root = path
    else:
        extracted = _extract(path, workdir, runner)
        if extracted is None:
            return None
        root, tar_names = extracted
    links = _links_in(root)
    if not links:
        raise UserError(f"'{path}' is neither a rootfs nor a Kata release (no {' or '.join(release_links())} at "
                        "its top or in <prefix>/share/kata-containers/)",
                        "pass a rootfs directory, an artifact, or a Kata release directory or tarball")
    members = []
    for link in links:
        _inside(root, link)
        if not tar_names:
            members.append((link, str(link)))
            continue
        relative = link.relative_to(root).as_posix()
        members.append((link, f"{path}:{f'./{relative}' if f'./{relative}' in tar_names else relative}"))
    return members


# -- writing the layout ------------------------------------------------------------------

@dataclass(frozen=True)
class ReleaseOptions:
    layout: str = setting("plain", help="plain: the artifacts at the top of -o; kata: Kata's release tree "
                          "(<prefix>/share/kata-containers/kata-<distro>-<release>.image and the "
                          "kata-containers*.img links)", choices=lambda: LAYOUTS)
    prefix: Path = setting(Path("/opt/kata"), help="the install prefix of the kata layout (default: /opt/kata)",
                           metavar="DIR", parse=as_path)
    tarball: bool = setting(False, help="also pack the kata layout as Kata's release tarballs "
                            "(kata-static-rootfs-image.tar.zst, ...-initrd.tar.zst)", boolean=True)
    tarball_compression: str = setting("zstd", help="the release tarballs' compression",
                                       choices=lambda: TARBALL_CODECS)
    variant: str | None = setting(None, help="a variant name for the kata layout's file names "
                                  "(kata-<distro>-<release>-<variant>.image, ...)", metavar="NAME")

    def validate(self) -> None:
        if self.layout != "kata" and (self.tarball or self.variant):
            raise UserError("--tarball and --variant apply to --layout kata", "add --layout kata")
        if not self.prefix.is_absolute():
            raise UserError(f"--prefix {self.prefix} is not an absolute path", "pass e.g. --prefix /opt/kata")
        if self.variant is not None and not re.fullmatch(r"[a-z0-9][a-z0-9.-]*", self.variant):
            raise UserError(f"--variant '{self.variant}' is not a plain name", "use lowercase letters, digits, '-'")
        if self.tarball:  # refused before any build work, not only when the tarballs are written
            check_host_safe("kata-static-rootfs-*", [f"./{self.share}/"])

    @property
    def share(self) -> Path:
        """Where the artifacts live below the output directory (and on the host)."""
        return self.prefix.relative_to("/") / "share" / "kata-containers"


LAYOUTS = ("plain", "kata")
TARBALL_CODECS = ("zstd", "xz")
SHA256SUMS = "SHA256SUMS"


def runtime_name(artifact: Artifact, options: ReleaseOptions) -> str:
    """The name a runtime's configuration uses for the artifact: its link in the kata layout,
    else the file itself."""
    if options.layout != "kata":
        return artifact.path.name
    return get_packer(artifact.format).release.link_name(options.variant) or artifact.path.name


def arrange_kata_layout(directory: Path, artifacts: list[Artifact], options: ReleaseOptions, distro: str,
                        release: str) -> list[Artifact]:
    """Move the artifacts into Kata's release tree inside `directory` and link them, each by
    the names its packer gives; its sidecars go beside it. Returns the artifacts at their new
    paths."""
    share = directory / options.share
    share.mkdir(parents=True, exist_ok=True)
    placed = []
    for artifact in artifacts:
        names = get_packer(artifact.format).release
        name = names.file_name(distro, release, options.variant)
        os.replace(artifact.path, share / name)
        link = names.link_name(options.variant)
        if link:
            os.symlink(name, share / link)
        for sidecar in artifact.sidecars:
            os.replace(directory / sidecar, share / sidecar)
        placed.append(dataclasses.replace(artifact, path=share / name))
    return placed


# Kata unpacks every component tarball with `tar -C /` and refuses one holding any of these
# (docs/kata-contract.md, release packaging, scripts/assert-tarball-host-safe.sh).
HOST_UNSAFE_FILES = (".dockerenv", "etc/hostname", "etc/hosts", "etc/mtab", "etc/resolv.conf")
HOST_UNSAFE_DIRS = ("dev", "proc", "sys")


def host_unsafe_member(name: str) -> str | None:
    """Why a member name would harm a host it is unpacked over (`tar -C /`), or None."""
    path = "/".join(part for part in name.split("/") if part not in ("", "."))
    if path in HOST_UNSAFE_FILES:
        return f"it holds {path}, which would replace the host's"
    top = path.split("/", 1)[0]
    if top in HOST_UNSAFE_DIRS:
        return f"it holds {path}, under /{top} of the host"
    return None


def check_host_safe(tarball: str, members: list[str]) -> None:
    for member in members:
        why = host_unsafe_member(member)
        if why is not None:
            raise UserError(f"release tarball {tarball} would not be host-safe: {why}",
                            "choose a --prefix outside /dev, /proc and /sys (default /opt/kata)")


def tarball_members(directory: Path, files: list[Path]) -> list[str]:
    """The member names Kata's `cd destdir; tar -c .` gives: `./`, every directory above the
    files, then the files, each `./`-prefixed, in name order."""
    names = {"./"}
    for path in files:
        relative = path.relative_to(directory)
        names.add(f"./{relative}")
        names.update(f"./{parent}" for parent in relative.parents if str(parent) != ".")
    return sorted(names)


def write_release_tarballs(directory: Path, placed: list[Artifact], options: ReleaseOptions, epoch: int,
                           runner: Runner) -> list[Path]:
    """kata-static-rootfs-<kind>[-variant].tar.<zst|xz>: each linked artifact's part of the
    tree as Kata names its members (`./opt/...`, with directory entries), root-owned, 0755
    directories and 0644 files, sorted and stamped with the epoch, so two builds give the
    same bytes, and checked host-safe before anything is written. Untarred together, several
    give their union: they share only directories, which are identical."""
    codec = get_codec(options.tarball_compression)
    compressor = " ".join(codec.commands[0][1](codec.default_level))
    planned = []
    for artifact in placed:
        names = get_packer(artifact.format).release
        stem = names.tarball_stem(options.variant)
        link = names.link_name(options.variant)
        if stem is None or link is None:
            continue
        share = artifact.path.parent
        members = tarball_members(directory, [artifact.path, share / link] + [share / s for s in artifact.sidecars])
        tarball = directory / f"{stem}.tar.{codec.name.replace('zstd', 'zst')}"
        check_host_safe(tarball.name, members)
        planned.append((tarball, members))
    for tarball, members in planned:
        for member in members:  # the modes Kata's release gives, whatever the umask (links keep 0777)
            path = directory / member
            if not path.is_symlink():
                os.chmod(path, 0o755 if path.is_dir() else 0o644)
        # Written beside `directory`, not in it: its own entry `./` must not change while tar reads it.
        runner.run(["tar", "--create", "--file", str(_outside(directory, tarball)), "--use-compress-program",
                    compressor, "--format=gnu", "--no-recursion", "--numeric-owner", "--owner=0", "--group=0",
                    f"--mtime=@{epoch}", "--directory", str(directory), "--", *members], limit=FILESYSTEM)
    for tarball, _ in planned:
        os.replace(_outside(directory, tarball), tarball)
    return [tarball for tarball, _ in planned]


def _outside(directory: Path, tarball: Path) -> Path:
    return directory.parent / f".{directory.name}.{tarball.name}.partial"


def write_sha256sums(directory: Path) -> Path:
    """SHA256SUMS for every regular file written (links name their targets, which are listed)."""
    lines = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and not p.is_symlink()):
        lines.append(f"{sha256_file(path)}  {path.relative_to(directory)}")
    target = directory / SHA256SUMS
    target.write_text("\n".join(lines) + "\n")
    return target
