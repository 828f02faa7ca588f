"""The build cache: entries written atomically, verified on use, listed and cleaned; the
bootstrap key changes with every input that decides the tree."""

from __future__ import annotations

from osbuilder.pack.gzip_pieces import PieceStore

import dataclasses
import json
import multiprocessing
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from osbuilder.foundation.cache import BuildCache, default_cache_dir, metadata_digest
from tests.conftest import run_cli


def _tarball(path: Path, content: bytes = b"tree"):
    """A writer for store_tree (the path argument is unused: entries are written in place)."""
    return lambda target: target.write_bytes(content)


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "osbuilder"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "osbuilder"


def whole(cache: BuildCache, name: str) -> Path | None:
    """The entry's tarball when it reads back whole through unpack_tree, else None."""
    seen: list[Path] = []
    return seen[0] if cache.unpack_tree(name, seen.append) else None


def test_an_entry_is_stored_whole_and_found_again(tmp_path):
    cache = BuildCache(tmp_path / "cache")
    assert not whole(cache, "debian-bookworm-x86_64-k")
    stored = cache.store_tree("debian-bookworm-x86_64-k", _tarball(tmp_path / "t.tar"), {"release": "bookworm"})
    assert whole(cache, "debian-bookworm-x86_64-k") == stored
    assert stored.read_bytes() == b"tree"
    assert [p.name for p in (tmp_path / "cache" / "bootstrap").iterdir()] == ["debian-bookworm-x86_64-k"]
    record = json.loads((stored.parent / "entry.json").read_text())
    assert record["inputs"] == {"release": "bookworm"} and record["size"] == 4


@pytest.mark.parametrize("damage", ["truncated", "changed", "no-record", "bad-record"])
def test_a_damaged_entry_is_removed_and_reported_missing(tmp_path, damage):
    cache = BuildCache(tmp_path / "cache")
    stored = cache.store_tree("e", _tarball(tmp_path / "t.tar", b"x" * 1000), {})
    if damage == "truncated":
        os.truncate(stored, 10)
    elif damage == "changed":
        stored.write_bytes(b"y" * 1000)
    elif damage == "no-record":
        (stored.parent / "entry.json").unlink()
    else:
        (stored.parent / "entry.json").write_text("{")
    assert not whole(cache, "e")
    assert not stored.parent.exists()


@pytest.mark.parametrize("damage", [None, "changed", "truncated", "unreadable"])
def test_unpack_tree_checks_the_digest(tmp_path, damage):
    """A whole entry is unpacked and kept; a damaged one (wrong bytes, wrong size) reports
    False and is removed, so the build bootstraps afresh. One whose bytes match its digest but
    that tar fails to unpack is not damaged: the failure is raised, and the entry kept."""
    from osbuilder.foundation.errors import CommandError

    cache = BuildCache(tmp_path / "cache")
    stored = cache.store_tree("e", _tarball(tmp_path / "t.tar", b"x" * 1000), {})
    if damage == "changed":
        stored.write_bytes(b"y" * 1000)
    elif damage == "truncated":
        os.truncate(stored, 10)
    unpacked: list[bytes] = []

    def unpack(tarball: Path) -> None:
        if damage == "unreadable":
            raise CommandError(["tar", "--extract"], 2, "tar: This does not look like a tar archive")
        unpacked.append(tarball.read_bytes())

    if damage == "unreadable":
        with pytest.raises(CommandError):
            cache.unpack_tree("e", unpack)
        assert stored.exists() and cache.unpack_tree("e", lambda tarball: None)  # kept, and whole
        return
    whole = cache.unpack_tree("e", unpack)
    assert whole == (damage is None)
    assert stored.parent.exists() == (damage is None)
    if damage in (None, "changed"):
        assert len(unpacked) == 1  # unpacked while hashed; the caller discards it when damaged
    else:
        assert unpacked == []
    assert cache.unpack_tree("missing", unpack) is False


def test_the_mmdebstrap_version_read_from_its_script_is_what_it_reports():
    """The cache key's tool version comes from the script's $VERSION (no perl start-up); it
    must be exactly what `mmdebstrap --version` prints."""
    import subprocess

    from osbuilder.rootfs.backends.apt import AptBackend
    from osbuilder.foundation.runner import Runner

    reported = subprocess.run(["mmdebstrap", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    assert AptBackend().tool_version(Runner()) == reported


def _hold_lock(root: str, held: "multiprocessing.synchronize.Event",
               release: "multiprocessing.synchronize.Event") -> None:
    with BuildCache(Path(root)).lock("entry"):
        held.set()
        release.wait(30)


def test_the_lock_makes_a_second_build_wait(tmp_path):
    """Another process holds the entry: this one waits until it lets go, other entries do not."""
    import threading

    held, release = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold_lock, args=(str(tmp_path), held, release))
    holder.start()
    acquired = threading.Event()

    def second_build() -> None:
        with BuildCache(tmp_path).lock("entry"):
            acquired.set()

    try:
        assert held.wait(10)
        with BuildCache(tmp_path).lock("another"):  # other entries are not held up
            pass
        waiter = threading.Thread(target=second_build)
        waiter.start()
        assert not acquired.wait(0.5), "the second build did not wait for the lock"
        release.set()
        assert acquired.wait(10), "the second build never got the lock"
        waiter.join()
    finally:
        release.set()
        holder.join()


def test_clean_removes_old_entries_or_all(tmp_path):
    cache = BuildCache(tmp_path / "cache")
    old = cache.store_tree("old", _tarball(tmp_path / "a.tar"), {})
    new = cache.store_tree("new", _tarball(tmp_path / "b.tar"), {})
    downloads = cache.downloads("apt", "debian", "bookworm", "x86_64")
    (downloads / "chrony.deb").write_bytes(b"deb")
    ten_days_ago = time.time() - 10 * 86400
    os.utime(old.parent / "entry.json", (ten_days_ago, ten_days_ago))
    for path in (downloads, downloads / "chrony.deb"):
        os.utime(path, (ten_days_ago, ten_days_ago))
    names = sorted(e.name for e in cache.entries())
    assert names == ["apt/debian-bookworm-x86_64", "new", "old"]
    removed = cache.clean(older_than_days=5)
    assert sorted(e.name for e in removed) == ["apt/debian-bookworm-x86_64", "old"]
    assert new.exists() and not old.exists() and not downloads.exists()
    cache.clean()
    assert cache.entries() == []


def test_clean_keeps_an_entry_another_build_is_writing(tmp_path):
    cache = BuildCache(tmp_path / "cache")
    cache.store_tree("done", _tarball(tmp_path / "a.tar"), {})
    writing = tmp_path / "cache" / "bootstrap" / f".busy.{os.getpid()}.partial"
    writing.mkdir()
    dead = tmp_path / "cache" / "bootstrap" / ".gone.999999999.partial"
    dead.mkdir()
    cache.clean()
    assert writing.exists() and not dead.exists()


def test_cache_cli_lists_and_cleans(tmp_path):
    cache = BuildCache(tmp_path / "cache")
    cache.store_tree("debian-bookworm-x86_64-k", _tarball(tmp_path / "a.tar"), {"distro": "debian"})
    listed = run_cli("cache", "list", "--cache-dir", tmp_path / "cache", "--json")
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)["entries"]
    assert [(e["kind"], e["name"]) for e in entries] == [("bootstrap", "debian-bookworm-x86_64-k")]
    text = run_cli("cache", "list", "--cache-dir", tmp_path / "cache")
    assert "debian-bookworm-x86_64-k" in text.stdout
    kept = run_cli("cache", "clean", "--older-than", "1", "--cache-dir", tmp_path / "cache", "--json")
    assert json.loads(kept.stdout)["removed"] == []
    unasked = run_cli("cache", "clean", "--cache-dir", tmp_path / "cache")
    assert unasked.returncode == 2 and "--all" in unasked.stderr and "--older-than" in unasked.stderr
    assert len(BuildCache(tmp_path / "cache").entries()) == 1  # refused: nothing removed
    both = run_cli("cache", "clean", "--all", "--older-than", "1", "--cache-dir", tmp_path / "cache")
    assert both.returncode == 2
    cleaned = run_cli("cache", "clean", "--all", "--cache-dir", tmp_path / "cache")
    assert cleaned.returncode == 0 and "removed 1 entry" in cleaned.stdout
    assert BuildCache(tmp_path / "cache").entries() == []
    bad = run_cli("cache", "clean", "--older-than", "-3", "--cache-dir", tmp_path / "cache")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_cache_clean_refuses_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    result = run_cli("cache", "clean", "--all", "--cache-dir", tmp_path / "file")
    assert result.returncode == 2 and "is not a directory" in result.stderr


# --- the bootstrap key: every input that decides the tree's content changes it ---------

def _inputs(tmp_path: Path, **changes):
    from osbuilder.rootfs.recipes import load_recipe
    from osbuilder.rootfs.bootstrap import bootstrap_inputs
    from osbuilder.rootfs.backends import InstallRequest
    from osbuilder.foundation.arch import get_arch

    recipe_dir = tmp_path / "recipes"
    if not recipe_dir.exists():
        recipe_dir.mkdir()
        source = Path(__file__).resolve().parents[2] / "distros" / "debian.toml"
        (recipe_dir / "debian.toml").write_text(source.read_text())
        (tmp_path / "keyring.gpg").write_bytes(b"key one")
    if "recipe_text" in changes:
        (recipe_dir / "debian.toml").write_text((recipe_dir / "debian.toml").read_text() + changes.pop("recipe_text"))
    if "keyring_bytes" in changes:
        (tmp_path / "keyring.gpg").write_bytes(changes.pop("keyring_bytes"))
    recipe = load_recipe("debian", recipe_dir)
    section = dataclasses.replace(recipe.backend_section, keyring=str(tmp_path / "keyring.gpg"))
    request = InstallRequest(distro="debian", release="bookworm", arch=get_arch("x86_64"),
                             packages=("chrony", "dbus"), mirror="http://deb.debian.org/debian", section=section,
                             source_date_epoch=1700000000, )
    tool = changes.pop("tool", "mmdebstrap 1.3.5")
    if "section" in changes:
        request = dataclasses.replace(request, section=dataclasses.replace(section, **changes.pop("section")))
    request = dataclasses.replace(request, **changes)
    return bootstrap_inputs(request, recipe, tool)


@pytest.mark.parametrize("change", [
    {"release": "trixie"},
    {"arch": "aarch64"},
    {"packages": ("chrony", "dbus", "iptables")},
    {"mirror": "http://mirror.example/debian"},
    {"source_date_epoch": 1700000001},
    {"source_date_epoch": None},
    {"section": {"components": ("main", "contrib")}},
    {"keyring_bytes": b"key two"},
    {"recipe_text": "\n# a comment changes the recipe's contents\n"},
    {"tool": "mmdebstrap 1.4.0"},
], ids=lambda c: next(iter(c)))
def test_every_input_changes_the_bootstrap_key(tmp_path, change):
    from osbuilder.foundation.arch import get_arch
    from osbuilder.foundation.cache import inputs_key

    if "arch" in change:
        change = {"arch": get_arch(change["arch"])}
    before = inputs_key(_inputs(tmp_path))
    assert inputs_key(_inputs(tmp_path)) == before  # stable
    assert inputs_key(_inputs(tmp_path, **change)) != before


def test_package_order_and_duplicates_do_not_change_the_key(tmp_path):
    from osbuilder.foundation.cache import inputs_key

    assert inputs_key(_inputs(tmp_path, packages=("dbus", "chrony", "dbus"))) == inputs_key(_inputs(tmp_path))


def test_initrd_pieces_are_listed_as_one_entry_and_age_one_by_one(tmp_path):
    cache = BuildCache(tmp_path / "cache")
    store = PieceStore(cache.pieces_dir())
    store.put(6, "a" * 64, b"old piece")
    store.put(6, "b" * 64, b"fresh piece")
    (entry,) = cache.entries()
    assert entry.kind == "pieces" and entry.name.startswith("gzip-6-zlib") and entry.size == 2 * 32 + 20
    ten_days_ago = time.time() - 10 * 86400
    old = next(p for p in entry.path.rglob("*") if p.name == "a" * 64)
    os.utime(old, (ten_days_ago, ten_days_ago))
    assert cache.clean(older_than_days=5) == []  # the entry is in use; its old piece goes
    assert store.get(6, "a" * 64) is None and store.get(6, "b" * 64) == b"fresh piece"
    fresh = next(p for p in entry.path.rglob("*") if p.is_file())
    os.utime(fresh, (ten_days_ago, ten_days_ago))
    assert [e.kind for e in cache.clean(older_than_days=5)] == ["pieces"]
    assert cache.entries() == []


def _cp_al(source: Path, into: Path) -> None:
    subprocess.run(["cp", "--archive", "--link", "--no-target-directory", str(source), str(into)], check=True)


def _small_tree(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text("ID=debian\n")
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_bytes(b"\x7fELF")
    os.chmod(root / "usr/bin/tool", 0o755)
    os.symlink("usr/bin", root / "bin")
    return root


def _kept_entry(tmp_path: Path) -> tuple[BuildCache, Path]:
    cache = BuildCache(tmp_path / "cache")
    cache.store_tree("e", _tarball(tmp_path / "a.tar"), {})
    cache.keep_unpacked("e", _small_tree(tmp_path / "staging" / "rootfs"), _cp_al)
    return cache, cache.bootstrap_path("e")


def test_a_kept_copy_is_cloned_with_hard_links(tmp_path):
    cache, entry = _kept_entry(tmp_path)
    assert (entry / "tree.metadata").read_text().strip() == metadata_digest(entry / "tree")
    into = tmp_path / "build" / "rootfs"
    into.parent.mkdir()
    assert cache.clone_tree("e", into, _cp_al)
    assert (into / "etc/os-release").read_text() == "ID=debian\n" and os.readlink(into / "bin") == "usr/bin"
    assert (into / "usr/bin/tool").stat().st_ino == (entry / "tree/usr/bin/tool").stat().st_ino
    assert (into / "usr/bin").stat().st_ino != (entry / "tree/usr/bin").stat().st_ino  # its own directories
    assert [e.name for e in cache.entries()] == ["e"]  # the copy is part of the entry, not one of its own


@pytest.mark.parametrize("change", ["content", "rewritten", "mode", "mtime", "removed", "added"])
def test_a_changed_copy_is_dropped_and_not_cloned(tmp_path, change):
    cache, entry = _kept_entry(tmp_path)
    kept = entry / "tree"
    if change == "content":
        with open(kept / "etc/os-release", "a") as f:  # in place, as a careless writer would
            f.write("VERSION=13\n")
    elif change == "rewritten":  # the same size and mtime: only the bytes differ
        target = kept / "usr/bin/tool"
        before = target.stat()
        with open(target, "r+b") as f:
            f.write(b"\x7fEVL")
        os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert target.stat().st_size == before.st_size and target.stat().st_ino == before.st_ino
    elif change == "mode":
        os.chmod(kept / "usr/bin/tool", 0o4755)
    elif change == "mtime":
        os.utime(kept / "usr/bin/tool", (0, 0))
    elif change == "removed":
        (kept / "etc/os-release").unlink()
    else:
        (kept / "etc/new").write_text("x")
    into = tmp_path / "build" / "rootfs"
    into.parent.mkdir()
    assert not cache.clone_tree("e", into, _cp_al)
    assert not kept.exists() and not (entry / "tree.metadata").exists()
    assert (entry / "tree.tar").is_file()  # the tarball stays the entry's source of truth


def test_no_clone_across_filesystems(tmp_path):
    cache, entry = _kept_entry(tmp_path)
    elsewhere = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        assert os.stat(elsewhere).st_dev != os.stat(entry).st_dev
        assert not cache.clone_tree("e", elsewhere / "rootfs", _cp_al)
        assert not (elsewhere / "rootfs").exists() and (entry / "tree").is_dir()
        cache.keep_unpacked("e", _small_tree(elsewhere / "other"), _cp_al)  # refused: cannot link across
    finally:
        shutil.rmtree(elsewhere)


def test_keeping_a_copy_replaces_leftovers_and_cleans_up_when_interrupted(tmp_path):
    cache = BuildCache(tmp_path / "cache")
    cache.store_tree("e", _tarball(tmp_path / "a.tar"), {})
    entry = cache.bootstrap_path("e")
    (entry / ".tree.999999999.partial").mkdir()  # a build killed while keeping its copy
    (entry / "tree").mkdir()  # a copy whose digest was never written
    tree = _small_tree(tmp_path / "staging" / "rootfs")

    def interrupted(source: Path, into: Path) -> None:
        _cp_al(source, into)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.keep_unpacked("e", tree, interrupted)
    assert sorted(p.name for p in entry.iterdir()) == ["entry.json", "tree.tar"]
    cache.keep_unpacked("e", tree, _cp_al)
    assert sorted(p.name for p in entry.iterdir()) == ["entry.json", "tree", "tree.content", "tree.metadata",
                                                       "tree.tar"]
    shutil.rmtree(entry / "tree")  # a digest without its copy is kept again, not trusted
    cache.keep_unpacked("e", tree, _cp_al)
    assert (entry / "tree.metadata").read_text().strip() == metadata_digest(entry / "tree")


def test_a_full_disk_while_unpacking_a_whole_entry_keeps_the_entry(tmp_path):
    """tar really runs out of space (a 1 MiB tmpfs in a private mount namespace): the error is
    reported as what it is, and the entry, whose digest matches, stays for the next build."""
    from osbuilder.foundation.errors import CommandError
    from osbuilder.foundation.runner import FILESYSTEM, Runner

    cache = BuildCache(tmp_path / "cache")
    source = tmp_path / "big"
    source.mkdir()
    (source / "data").write_bytes(os.urandom(4 << 20))
    tarball = tmp_path / "big.tar"
    subprocess.run(["tar", "-C", source, "-cf", tarball, "."], check=True)
    stored = cache.store_tree("e", lambda path: shutil.copyfile(tarball, path), {})
    small = tmp_path / "small"
    small.mkdir()

    def unpack(tree: Path) -> None:
        Runner().run(["unshare", "--mount", "sh", "-c", 'mount -t tmpfs -o size=1m tmpfs "$1" && tar -C "$1" -xf "$2"',
                      "unpack", small, tree], limit=FILESYSTEM)

    with pytest.raises(CommandError) as raised:
        cache.unpack_tree("e", unpack)
    assert raised.value.out_of_space
    assert stored.is_file() and [e.name for e in cache.entries()] == ["e"]
