"""Alpine's apk v2 container format (docs/kata-contract.md, the apk format): concatenated gzip streams, the
first a signature over the next stream's compressed bytes.

Signatures are checked with openssl against trusted public keys found by the name the
signature file carries (`.SIGN.RSA.<key>` is SHA-1, `.SIGN.RSA256.<key>` SHA-256).
"""

from __future__ import annotations

import io
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from osbuilder.foundation.errors import UserError
from osbuilder.foundation.runner import PROBE, Runner

SIGNATURE_PREFIXES = {".SIGN.RSA256.": "sha256", ".SIGN.RSA.": "sha1"}


@dataclass(frozen=True)
class Stream:
    compressed: bytes
    data: bytes


def gzip_streams(blob: bytes, source: str) -> list[Stream]:
    """Each gzip member of `blob`, with its own compressed bytes (what signatures cover)."""
    streams = []
    position = 0
    while position < len(blob):
        inflater = zlib.decompressobj(wbits=31)
        try:
            data = inflater.decompress(blob[position:]) + inflater.flush()
        except zlib.error as exc:
            raise UserError(f"{source} is corrupt or not in apk format ({exc})",
                            "the download was damaged or altered; nothing was installed") from None
        if not inflater.eof:
            raise UserError(f"{source} ends inside a gzip stream", "the download is truncated; retry")
        end = len(blob) - len(inflater.unused_data)
        streams.append(Stream(blob[position:end], data))
        position = end
    return streams


def tar_members(data: bytes, source: str) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """The members of one segment's tar (which may lack end-of-archive blocks), with file bodies."""
    members = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                body = tar.extractfile(member).read() if member.isreg() else None  # type: ignore[union-attr]
                members.append((member, body))
    except tarfile.TarError as exc:
        raise UserError(f"{source} holds an unreadable tar segment ({exc})", "check the repository") from None
    return members


@dataclass(frozen=True)
class TrustedKeys:
    """Public keys by file name, from a key file or a directory of them."""

    keys: dict[str, Path]

    @classmethod
    def load(cls, location: Path) -> "TrustedKeys":
        files = sorted(location.glob("*.pub")) if location.is_dir() else [location]
        return cls({path.name: path for path in files if path.is_file()})

    def verify(self, signature: Stream, signed: Stream, source: str, workdir: Path, runner: Runner) -> str:
        """Check that `signature`'s segment signs `signed`; returns the key's name."""
        members = [(m, body) for m, body in tar_members(signature.data, source) if body is not None]
        for member, body in members:
            for prefix, digest in SIGNATURE_PREFIXES.items():
                if not member.name.startswith(prefix):
                    continue
                key_name = member.name[len(prefix):]
                key = self.keys.get(key_name)
                if key is None:
                    raise UserError(f"{source} is signed by key '{key_name}', which is not trusted",
                                    "pass --keyring the key file (or a directory of keys) that signs it")
                signature_file, data_file = workdir / "apk.sig", workdir / "apk.signed"
                signature_file.write_bytes(body or b"")
                data_file.write_bytes(signed.compressed)
                result = runner.run(["openssl", "dgst", f"-{digest}", "-verify", str(key), "-signature",
                                     str(signature_file), str(data_file)], check=False,
                                    hint="install openssl (./setup.sh)", limit=PROBE)
                if result.returncode != 0:
                    raise UserError(f"{source}: the signature by '{key_name}' does not match its content",
                                    "the file was altered or signed by another key; nothing was installed")
                return key_name
        raise UserError(f"{source} carries no signature", "use a signed repository; nothing was installed")
