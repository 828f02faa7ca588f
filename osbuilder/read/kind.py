"""What an artifact is: recognised from its bytes (never its name) by the packer of its
format, or a rootfs directory."""

from __future__ import annotations

from pathlib import Path

from osbuilder.foundation.documents import not_regular
from osbuilder.foundation.errors import UserError
from osbuilder.pack.artifact import ROOTFS_KIND, ArtifactInfo
from osbuilder.pack.image import ROOT_HASH_PATTERN, verity_params_beside
from osbuilder.pack.registry import PACKERS


def packed_artifact(path: Path) -> ArtifactInfo | None:
    """The file as the first packer that recognises its bytes reads it, or None."""
    size = path.stat().st_size
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise UserError(f"cannot read '{path}' ({exc.strerror})", "check its permissions") from None
    with f:
        for packer in PACKERS.values():
            f.seek(0)
            info = packer.recognise(path, f, size)
            if info is not None:
                return info
    return None


def recognise_artifact(path: Path) -> ArtifactInfo:
    path = Path(path)
    if path.is_dir():
        return ArtifactInfo(path, ROOTFS_KIND, 0)
    try:
        what = not_regular(path)
    except FileNotFoundError:
        raise UserError(f"artifact '{path}' does not exist", "pass an initrd, image or ISO that osbuilder wrote") from None
    if what is not None:  # a FIFO would block the reader, /dev/zero would never end
        raise UserError(f"artifact '{path}' is {what}, not a file", "pass an initrd, image or ISO that osbuilder wrote")
    info = packed_artifact(path)
    if info is not None:
        return info
    nouns = [packer.noun for packer in PACKERS.values()]
    raise UserError(f"'{path}' is neither {', '.join(nouns[:-1])} nor {nouns[-1]}",
                    f"pass an artifact osbuilder wrote ({', '.join(PACKERS)})")


def verity_params_for(artifact: ArtifactInfo) -> str:
    """The one-line verity parameters osbuilder wrote beside the image."""
    params = verity_params_beside(artifact)
    if params is not None:
        return params
    raise UserError(f"'{artifact.path}' has a dm-verity hash partition but no {ROOT_HASH_PATTERN} beside it",
                    f"put the {ROOT_HASH_PATTERN} that osbuilder wrote with the image next to it")
