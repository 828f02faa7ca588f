"""Kata's release layout (reference section 11): a directory or tarball holding
`kata-containers.img` / `kata-containers-initrd.img` links to the versioned artifacts, with
`root_hash.txt` beside a verity image. Reading one back for inspect and check."""

from __future__ import annotations

import tarfile
from pathlib import Path

from osbuilder.errors import UserError
from osbuilder.tarballs import plain_tarball
from osbuilder.runner import Runner

# The names the runtime's configuration points at (variants add a suffix).
RELEASE_LINKS = ("kata-containers.img", "kata-containers-initrd.img")
RELEASE_GLOB = "kata-containers*.img"
MAX_DEPTH = 6  # opt/kata/share/kata-containers/ and a little more


def _is_rootfs(path: Path) -> bool:
    return any((path / name).exists() or (path / name).is_symlink() for name in ("sbin", "etc", "usr"))


def _links_in(root: Path) -> list[Path]:
    found = []
    for depth in range(MAX_DEPTH + 1):
        found += sorted(root.glob("/".join(["*"] * depth + [RELEASE_GLOB])))
    return found


def _inside(root: Path, link: Path) -> Path:
    """The link's target, which must stay inside the release."""
    target = link.resolve()
    if not target.is_relative_to(root.resolve()):
        raise UserError(f"'{link}' points outside the release ({target})", "pass a release whose links stay inside it")
    if not target.is_file():
        raise UserError(f"'{link}' points at '{target}', which does not exist", "pass a complete release")
    return link


def _extract(tarball: Path, workdir: Path, runner: Runner) -> Path | None:
    """The release's artifacts, links and sidecars out of a tarball, or None when the file is
    no tarball (GNU tar reads any compression it is in; listing stops at the first header).
    Only the needed members are extracted, through tarfile's 'data' filter: no absolute
    paths, no '..', no links that leave the tree."""
    listing = runner.run(["tar", "-tf", str(tarball)], check=False)
    if listing.returncode != 0 or not listing.stdout.strip():
        return None  # an ISO's zeroed system area reads as an empty tar: no members, no tarball
    names = {n for n in listing.stdout.splitlines() if Path(n).name.startswith(("kata-", "root_hash"))}
    if not any(Path(n).match(RELEASE_GLOB) for n in names):
        raise UserError(f"tarball '{tarball}' holds no {' or '.join(RELEASE_LINKS)}",
                        "pass a Kata release tarball such as kata-static-rootfs-image.tar.zst")
    plain = plain_tarball(tarball, workdir, runner)
    root = workdir / "release"
    root.mkdir()
    try:
        with tarfile.open(plain) as archive:
            wanted = [m for m in archive.getmembers() if m.name in names]
            archive.extractall(root, members=wanted, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise UserError(f"tarball '{tarball}' cannot be read ({exc})", "pass a complete release tarball") from None
    finally:
        if plain != tarball:
            plain.unlink(missing_ok=True)
    return root


def release_artifacts(path: Path, workdir: Path, runner: Runner) -> list[Path] | None:
    """The artifacts a Kata release holds (through its links), or None when `path` is not a
    release (a single artifact or a rootfs)."""
    path = Path(path)
    if path.is_dir():
        if _is_rootfs(path):
            return None
        root = path
    else:
        extracted = _extract(path, workdir, runner)
        if extracted is None:
            return None
        root = extracted
    links = _links_in(root)
    if not links:
        raise UserError(f"'{path}' is neither a rootfs nor a Kata release (no {' or '.join(RELEASE_LINKS)} in it)",
                        "pass a rootfs directory, an artifact, or a Kata release directory or tarball")
    return [_inside(root, link) for link in links]
