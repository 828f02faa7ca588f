"""The initrd packer: sorted newc cpio, streamed through a compressor; and reading one back."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from osbuilder.pack.catalog import PACKER_CATALOG
from osbuilder.pack.artifact import Artifact, ArtifactInfo, PackDetails
from osbuilder.pack.base import BOOTS_AS_INITRD, Packer, PackContext, ReleaseNames, RuntimeSlot
from osbuilder.pack.compress import CODECS, codec_of, compressing, get_codec
from osbuilder.pack.cpio import Entry, archive_tree
from osbuilder.pack.gzip_pieces import PiecewiseGzipWriter
from osbuilder.pack.guest_tree import GuestTree
from osbuilder.read.view import GuestView, NewcView
from osbuilder.foundation.runner import FILESYSTEM, Runner
from osbuilder.foundation.settings import setting

log = logging.getLogger("osbuilder")


@dataclass(frozen=True)
class InitrdOptions:
    compression: str = setting("gzip", help="initrd compression (gzip is the only one Kata's kernels unpack)",
                               choices=lambda: CODECS)
    level: int | None = setting(None, help="compression level (default: the codec's tuned default)", metavar="N",
                                parse=int)


@dataclass(frozen=True)
class InitrdDetails(PackDetails):
    compression: str
    level: int | None
    entries: int
    kernel_config: str | None  # the guest kernel option that unpacks this compression


class InitrdPacker(Packer):
    name = "initrd"
    help = PACKER_CATALOG[name].help
    default_file_name = "kata-containers-initrd.img"
    noun = "an initrd"
    Options = InitrdOptions
    release = ReleaseNames(suffix="initrd", link="kata-containers-initrd{variant}.img", tarball="initrd")
    runtime_slot = RuntimeSlot(key="initrd", preference=1)
    boots_as = BOOTS_AS_INITRD

    def validate(self, options: InitrdOptions) -> None:
        get_codec(options.compression).check_level(options.level)

    def pack(self, tree: GuestTree, out: Path, options: InitrdOptions, context: PackContext) -> Artifact:
        codec = get_codec(options.compression)
        level = codec.check_level(options.level)
        # The kernel runs /init from an initramfs; it points straight at what the mode runs.
        init = Entry.symlink("init", tree.mode.initrd_init_target, mtime=tree.epoch)
        with open(out, "wb") as stream_out:
            with compressing(codec, level, stream_out, context.tools, context.runner, context.pieces) as stream:
                # The gzip writer cuts its pieces where entries end (see gzip_pieces.py).
                boundary = stream.entry_done if isinstance(stream, PiecewiseGzipWriter) else None
                count = archive_tree(tree.listing, stream, tree.epoch, extra=[init], on_entry=boundary)
            if isinstance(stream, PiecewiseGzipWriter) and context.pieces is not None:
                log.info("initrd: %d of %d compressed pieces reused from the cache", stream.reused,
                         stream.reused + stream.compressed)
        return Artifact(path=out, format=self.name, size=out.stat().st_size,
                        details=InitrdDetails(init_mode=tree.init_mode, compression=codec.name, level=level,
                                              entries=count, kernel_config=codec.kernel_config))

    def describe(self, artifact: Artifact) -> str:
        details = artifact.details
        assert isinstance(details, InitrdDetails)
        return details.compression

    def describe_info(self, artifact: ArtifactInfo) -> str:
        return f"{artifact.codec.name} initrd" if artifact.codec is not None else self.name

    def layout_facts(self, artifact: ArtifactInfo, view: GuestView) -> dict[str, Any]:
        return {"compression": artifact.codec.name, "kernel_config": artifact.codec.kernel_config}

    def recognise(self, path: Path, f: BinaryIO, size: int) -> ArtifactInfo | None:
        codec = codec_of(f.read(16))
        return ArtifactInfo(path, self.name, size, codec=codec) if codec else None

    def open_view(self, artifact: ArtifactInfo, workdir: Path, runner: Runner) -> GuestView:
        return self._view(artifact, workdir, runner, None)

    def open_partial_view(self, artifact: ArtifactInfo, workdir: Path, runner: Runner,
                          wanted: frozenset[str]) -> GuestView:
        return self._view(artifact, workdir, runner, wanted)

    def _view(self, artifact: ArtifactInfo, workdir: Path, runner: Runner,
              wanted: frozenset[str] | None) -> GuestView:
        codec = artifact.codec
        if not codec.decompress:
            return NewcView(artifact.path, str(artifact.path))
        store = workdir / "initrd-members"
        # The decompressor's output is read as it comes (a pipe, read by a thread while this
        # one feeds it), and only the members a view may need are kept: what a small initrd
        # unpacks to never lands on the disk whole.
        read_end, write_end = os.pipe()
        indexed: list[NewcView] = []
        failure: list[BaseException] = []

        def index() -> None:
            with open(read_end, "rb") as stream:
                try:
                    indexed.append(NewcView(store, str(artifact.path), scratch=store, stream=stream, wanted=wanted))
                except BaseException as exc:  # reported by the feeding thread
                    failure.append(exc)
                    return  # closing the pipe stops the decompressor
                while stream.read(1 << 20):  # what follows the trailer (padding), read to the end
                    pass

        consumer = threading.Thread(target=index, daemon=True)
        consumer.start()
        try:
            try:
                with open(write_end, "wb") as out, open(artifact.path, "rb") as src, \
                        runner.pipe_to(codec.decompress, out, hint=f"'{artifact.path}' is not a valid {codec.name} "
                                                                   "stream", limit=FILESYSTEM) as stdin:
                    out.close()  # the decompressor holds the pipe now; EOF comes when it exits
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        stdin.write(chunk)
            except BaseException:
                consumer.join(timeout=5)
                if failure:  # the archive's own fault explains the decompressor's broken pipe
                    raise failure[0] from None
                raise
            consumer.join()
            if failure:
                raise failure[0]
            return indexed[0]
        except BaseException:
            store.unlink(missing_ok=True)
            raise
