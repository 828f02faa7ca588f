"""What osbuilder verified of a guest tree, remembered in the cache (`verified/`), so a packer
given a tree `osbuilder rootfs` checked does not run the closure check again (0.4 s of every
`osbuilder image` of a Debian tree).

A record is keyed by the tree's verified digest and what it was checked for (init mode, arch):
the digest covers every path's name, type, mode, owner, size, inode, mtime and ctime. A file
added, removed or rewritten changes it, and so does a chmod, chown or rename (each sets the
ctime, which no user can set back); a copy of the tree has inodes and ctimes of its own, so it
is checked again. The record holds nothing of the tree itself."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from osbuilder.foundation.fsutil import TreeListing

VERIFIED = "verified"  # the cache's directory of records

log = logging.getLogger("osbuilder")


def verified_digest(listing: TreeListing) -> str:
    digest = hashlib.sha256()
    for name, _, st in listing.entries:
        record = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_ino, st.st_rdev, st.st_mtime_ns, st.st_ctime_ns)
        digest.update(name + b"\0" + repr(record).encode() + b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class VerifiedTrees:
    """The records of one cache directory."""

    cache_root: Path

    def _record(self, digest: str, init_mode: str, arch: str) -> Path:
        key = hashlib.sha256(f"{digest} {init_mode} {arch}".encode()).hexdigest()
        return self.cache_root / VERIFIED / key

    def remember(self, tree: TreeListing, init_mode: str, arch: str, digest: str | None = None) -> str:
        """Record that the tree, as it is now (its `digest`, when already taken), passed the
        checks for `init_mode` on `arch`."""
        digest = digest or verified_digest(tree)
        record = self._record(digest, init_mode, arch)
        partial = record.with_name(f".{record.name}.{os.getpid()}")
        try:
            record.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps({"digest": digest, "init_mode": init_mode, "arch": arch}) + "\n")
            os.replace(partial, record)
        except OSError as exc:  # a cache this user cannot write (another's): the next pack checks again
            log.debug("the check of %s is not recorded in %s (%s)", tree.root, record.parent, exc)
            with contextlib.suppress(OSError):
                partial.unlink()
        return digest

    def look_up(self, tree: TreeListing, init_mode: str, arch: str) -> tuple[str, bool]:
        """The tree's digest, and whether it passed those checks as it is now. Checking reads
        nothing but what the digest covers, so the same digest is what remember records after."""
        digest = verified_digest(tree)
        record = self._record(digest, init_mode, arch)
        try:
            if not record.is_file():
                return digest, False
        except OSError:  # a cache this user cannot read: as if it held no record
            return digest, False
        with contextlib.suppress(OSError):  # another user's record is read, not touched
            os.utime(record)  # its last use, for `cache clean --older-than`
        return digest, True
