"""gzip in independently compressed pieces, so a rebuild recompresses only what changed.

One gzip member, one deflate stream, as `gzip -dc` and the kernel expect; inside it, the
data is cut into pieces that are each compressed from scratch and end byte-aligned with a
sync flush (what `pigz --independent` does). A piece's compressed bytes then depend only on
its own data, the level and zlib's version, and a `PieceStore` can hand them back to a
later build that writes the same piece: a build that changes only the agent recompresses
the pieces holding the agent and nothing else.

Where pieces are cut decides what a change costs. The archive writer reports where each
entry ends; a piece ends after an entry whose name hashes to a fixed pattern (about one
entry in 64, whatever the entries' sizes) or when it reaches PIECE_MAX bytes. A changed
entry thus changes its own piece and at most the pieces up to the next name-chosen cut;
after that the pieces of two builds line up again. Cuts depend only on the archive's
bytes and names, never on the machine, so the output is reproducible.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import struct
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from osbuilder.foundation.fsutil import write_atomically

log = logging.getLogger("osbuilder")

PIECE_MAX = 4 << 20
CUT_EVERY = 64  # entries per piece on average
MAX_WORKERS = 8
DIGEST = hashlib.sha256().digest_size
# No file name, no timestamp, Unix; the extra-flags byte as gzip sets it for the level.
_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00%c\x03"
_LAST_BLOCK = b"\x03\x00"  # an empty final fixed-Huffman block


def _extra_flags(level: int) -> int:
    return 2 if level == 9 else 4 if level == 1 else 0


class PieceStore:
    """Compressed pieces by the sha256 of their data, one file each: the compressed bytes
    followed by their own sha256, so a damaged file is noticed and replaced. Writes are
    best effort (a full disk costs speed, never the build) and atomic (temporary name,
    then rename), so concurrent builds can share the store."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, level: int, key: str) -> Path:
        return self.root / f"gzip-{level}-zlib{zlib.ZLIB_RUNTIME_VERSION}" / key[:2] / key

    def get(self, level: int, key: str) -> bytes | None:
        path = self._path(level, key)
        try:
            stored = path.read_bytes()
        except OSError:
            return None
        data, digest = stored[:-DIGEST], stored[-DIGEST:]
        if len(stored) <= DIGEST or hashlib.sha256(data).digest() != digest:
            log.warning("compressed piece %s is damaged; compressing it again", path)
            path.unlink(missing_ok=True)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # for `cache clean --older-than`
        return data

    def put(self, level: int, key: str, compressed: bytes) -> None:
        path = self._path(level, key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, compressed + hashlib.sha256(compressed).digest())
        except OSError as exc:
            log.debug("could not keep a compressed piece in %s: %s", self.root, exc)


class PiecewiseGzipWriter:
    """A writable stream producing one gzip member in `out`; `entry_done(name)` after each
    archive entry lets it cut pieces where they stay stable from build to build."""

    def __init__(self, out: BinaryIO, level: int, store: PieceStore | None = None,
                 workers: int | None = None) -> None:
        self.out = out
        self.level = level
        self.store = store
        # Past a few threads the cpio writer feeding them is the bottleneck, and each thread
        # holds up to two pieces in memory.
        self.workers = workers or min(len(os.sched_getaffinity(0)), MAX_WORKERS)
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="deflate")
        self._pending: deque[Future[tuple[bytes, bool]]] = deque()
        self._piece = bytearray()
        self._crc = 0
        self._length = 0
        self._closed = False
        self.reused = 0
        self.compressed = 0
        out.write(_HEADER % _extra_flags(level))

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data)
        while len(view):
            room = PIECE_MAX - len(self._piece)
            self._piece += view[:room]
            view = view[room:]
            if len(self._piece) >= PIECE_MAX:
                self._cut()
        return len(data)

    def entry_done(self, name: bytes) -> None:
        if zlib.crc32(name) % CUT_EVERY == 0:
            self._cut()

    def _cut(self) -> None:
        if not self._piece:
            return
        piece = bytes(self._piece)
        self._piece.clear()
        self._crc = zlib.crc32(piece, self._crc)
        self._length += len(piece)
        self._pending.append(self._pool.submit(self._deflate, piece))
        # Bounded look-ahead: memory stays a few pieces per worker.
        while len(self._pending) > 2 * self.workers:
            self._write_next()

    def _write_next(self) -> None:
        compressed, reused = self._pending.popleft().result()
        self.out.write(compressed)
        if reused:
            self.reused += 1
        else:
            self.compressed += 1

    def _deflate(self, piece: bytes) -> tuple[bytes, bool]:
        """The piece compressed, and whether the store had it (runs in a worker thread)."""
        key = hashlib.sha256(piece).hexdigest()
        if self.store is not None:
            stored = self.store.get(self.level, key)
            if stored is not None:
                return stored, True
        compressor = zlib.compressobj(self.level, zlib.DEFLATED, -zlib.MAX_WBITS)
        compressed = compressor.compress(piece) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if self.store is not None:
            self.store.put(self.level, key, compressed)
        return compressed, False

    def flush(self) -> None:
        """Pieces are cut by content only; an explicit flush must not add a cut."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._cut()
            while self._pending:
                self._write_next()
            self.out.write(_LAST_BLOCK + struct.pack("<II", self._crc, self._length & 0xFFFFFFFF))
            self.out.flush()
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Stop without finishing the stream (on failure or interruption)."""
        self._closed = True
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "PiecewiseGzipWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()
