"""The piecewise gzip writer: one valid gzip stream that the system's gzip reads, the same
bytes with or without a store of pieces, and a rebuild that recompresses only the pieces
its change touched."""

from __future__ import annotations

import io
import os
import random
import subprocess
from pathlib import Path

import pytest

from osbuilder.pack.cpio import archive_tree
from osbuilder.pack.gzip_pieces import CUT_EVERY, PIECE_MAX, PiecewiseGzipWriter, PieceStore


def make_tree(root: Path, seed: int = 7) -> Path:
    """A few hundred files of compressible and random data, one larger than a piece."""
    rng = random.Random(seed)
    for index in range(600):
        path = root / f"dir{index % 13}" / f"file{index:04d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        words = b" ".join(rng.choice([b"kata", b"agent", b"guest", b"cgroup"]) for _ in range(rng.randrange(2000)))
        path.write_bytes(words + rng.randbytes(rng.randrange(3000)))
    (root / "dir5" / "big").write_bytes(rng.randbytes(PIECE_MAX + 12345))
    return root


def pack(root: Path, store: PieceStore | None, out: Path) -> PiecewiseGzipWriter:
    with open(out, "wb") as stream, PiecewiseGzipWriter(stream, 6, store) as writer:
        archive_tree(root, writer, epoch=1700000000, on_entry=writer.entry_done)
    return writer


def raw_archive(root: Path) -> bytes:
    buffer = io.BytesIO()
    archive_tree(root, buffer, epoch=1700000000)
    return buffer.getvalue()


def gunzip(path: Path) -> bytes:
    subprocess.run(["gzip", "-t", str(path)], check=True)
    return subprocess.run(["gzip", "-dc", str(path)], check=True, capture_output=True).stdout


def test_the_system_gzip_reads_it_and_a_store_changes_no_byte(tmp_path: Path):
    tree = make_tree(tmp_path / "tree")
    store = PieceStore(tmp_path / "store")
    plain = pack(tree, None, tmp_path / "plain.gz")
    assert gunzip(tmp_path / "plain.gz") == raw_archive(tree)
    assert plain.compressed > 3 and plain.reused == 0
    first = pack(tree, store, tmp_path / "first.gz")
    again = pack(tree, store, tmp_path / "again.gz")
    assert first.reused == 0 and again.compressed == 0 and again.reused == first.compressed
    data = (tmp_path / "plain.gz").read_bytes()
    assert (tmp_path / "first.gz").read_bytes() == data == (tmp_path / "again.gz").read_bytes()
    assert data[3] == 0 and data[4:8] == b"\0\0\0\0", "a name or a timestamp in the header"


def test_a_change_recompresses_only_the_pieces_around_it(tmp_path: Path):
    tree = make_tree(tmp_path / "tree")
    store = PieceStore(tmp_path / "store")
    cold = pack(tree, store, tmp_path / "cold.gz")
    assert cold.compressed > 8
    # A file changes size: its piece and the last (the trailer's padding follows the length).
    (tree / "dir1" / "file0300").write_bytes(b"a new agent " * 5000)
    changed = pack(tree, store, tmp_path / "changed.gz")
    assert changed.compressed == 2 and changed.reused == cold.compressed - 2
    # A file is added: no entry after it changes (inode numbers come from names).
    (tree / "dir7" / "added").write_bytes(b"a payload")
    added = pack(tree, store, tmp_path / "added.gz")
    assert added.compressed == 2 and added.reused == cold.compressed - 2
    # ...and the result is what a build without any store writes.
    pack(tree, None, tmp_path / "fresh.gz")
    assert (tmp_path / "added.gz").read_bytes() == (tmp_path / "fresh.gz").read_bytes()
    assert gunzip(tmp_path / "added.gz") == raw_archive(tree)


def test_cuts_do_not_depend_on_how_the_data_is_written(tmp_path: Path):
    data = os.urandom(3 * PIECE_MAX + 999)
    names = [b"n%d" % i for i in range(5 * CUT_EVERY)]
    outputs = set()
    for step in (997, 65537, len(data)):
        out = io.BytesIO()
        with PiecewiseGzipWriter(out, 1, workers=2) as writer:
            for name in names:
                writer.write(name * 3)
                writer.entry_done(name)
            for i in range(0, len(data), step):
                writer.write(data[i:i + step])
        outputs.add(out.getvalue())
    assert len(outputs) == 1


@pytest.mark.parametrize("damage", ["flipped", "truncated", "empty"])
def test_a_damaged_piece_is_compressed_again_and_replaced(tmp_path: Path, damage: str):
    tree = make_tree(tmp_path / "tree")
    store = PieceStore(tmp_path / "store")
    pack(tree, store, tmp_path / "cold.gz")
    victim = max((p for p in store.root.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    good = victim.read_bytes()
    broken = {"flipped": good[:100] + bytes([good[100] ^ 1]) + good[101:], "truncated": good[:-40],
              "empty": b""}[damage]
    victim.write_bytes(broken)
    warm = pack(tree, store, tmp_path / "warm.gz")
    assert warm.compressed == 1
    assert (tmp_path / "warm.gz").read_bytes() == (tmp_path / "cold.gz").read_bytes()
    assert victim.read_bytes() == good


def test_a_store_that_cannot_be_written_costs_nothing_but_speed(tmp_path: Path):
    tree = make_tree(tmp_path / "tree")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the store's directory would be")
    pack(tree, PieceStore(blocked / "store"), tmp_path / "out.gz")
    assert gunzip(tmp_path / "out.gz") == raw_archive(tree)


def test_a_failure_midway_leaves_no_partial_piece(tmp_path: Path):
    tree = make_tree(tmp_path / "tree")
    store = PieceStore(tmp_path / "store")

    def fail_late(name: bytes) -> None:
        writer.entry_done(name)
        if name.endswith(b"file0400"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with open(tmp_path / "out.gz", "wb") as stream, PiecewiseGzipWriter(stream, 6, store) as writer:
            archive_tree(tree, writer, epoch=0, on_entry=fail_late)
    assert [p for p in store.root.rglob("*") if p.name.endswith(".partial")] == []
    assert all(p.stat().st_size > 32 for p in store.root.rglob("*") if p.is_file())
