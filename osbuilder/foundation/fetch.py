"""Downloads pinned by sha256: bounded in time, retried where retrying can help, cached by
digest, verified before anything uses them, and never left half-written.

requests reads proxies (HTTP_PROXY, HTTPS_PROXY, NO_PROXY) and the CA bundle
(REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE) from the environment.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from osbuilder.foundation.cache import DOWNLOADS
from osbuilder.foundation.errors import BuildError, UserError
from osbuilder.foundation.progress import Progress

log = logging.getLogger("osbuilder")
CHUNK = 1 << 16
PROGRESS_STEP = 8 << 20  # report every 8 MiB of a large download


@dataclass(frozen=True)
class FetchPolicy:
    connect_timeout: float = 15.0
    read_timeout: float = 60.0  # the longest silence a server may keep mid-body
    attempts: int = 4
    backoff: float = 1.0  # seconds before the second attempt, doubling after


def is_url(text: str | os.PathLike[str]) -> bool:
    return str(text).startswith(("http://", "https://"))


class _Retry(Exception):
    """A failure another attempt may not have (a dropped connection, a 5xx, a cut body)."""


def _attempt(url: str, partial: Path, policy: FetchPolicy, progress: Progress | None) -> str:
    import requests  # here: most commands never download, and it takes 50 ms to import

    digest = hashlib.sha256()
    try:
        with requests.get(url, stream=True, timeout=(policy.connect_timeout, policy.read_timeout)) as response:
            if response.status_code >= 500:
                raise _Retry(f"HTTP {response.status_code}")
            if response.status_code >= 400:
                raise UserError(f"downloading {url} failed: HTTP {response.status_code} {response.reason}",
                                "check the URL")
            expected = int(response.headers.get("Content-Length") or 0)
            received, reported = 0, 0
            with open(partial, "wb") as out:
                for chunk in response.iter_content(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    if progress is not None and received - reported >= PROGRESS_STEP:
                        reported = received
                        total = f" of {expected / (1 << 20):.1f}" if expected else ""
                        progress.phase("download", f"{Path(url).name}: {received / (1 << 20):.1f}{total} MiB")
            if expected and received != expected:
                raise _Retry(f"the body ended after {received} of {expected} bytes")
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
        raise _Retry(type(exc).__name__ + ": " + str(exc).split("\n")[0][:200]) from None
    finally:
        if progress is not None:
            progress.done()
    return digest.hexdigest()


def fetch(url: str, sha256: str | None, into: Path, cache_dir: Path | None = None,
          policy: FetchPolicy = FetchPolicy(), progress: Progress | None = None, signed: bool = False) -> Path:
    """`url` downloaded to `into` (a new file), its digest checked against `sha256`.
    With a cache directory and a digest, a cached copy is used and new downloads are kept.
    `signed`: the caller verifies a signature over the download, so no digest is needed."""
    if sha256 is not None:
        sha256 = sha256.lower()
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise UserError(f"'{sha256}' is not a sha256 digest", "pass 64 hexadecimal digits")
    elif not signed:
        log.warning("warning: %s is not pinned; pass its sha256 so a changed download is refused", url)
    cached = Path(cache_dir) / DOWNLOADS / sha256 if cache_dir is not None and sha256 else None
    if cached is not None and cached.is_file():
        log.info("using cached download of %s", url)
        source = cached
    else:
        source = into.with_name(f".{into.name}.partial")
        _download(url, source, sha256, policy, progress)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial_cache = cached.with_name(f".{cached.name}.{os.getpid()}.partial")
            try:
                shutil.copyfile(source, partial_cache)
                os.replace(partial_cache, cached)
            finally:
                partial_cache.unlink(missing_ok=True)
    if source == cached:
        shutil.copyfile(cached, into)
    else:
        os.replace(source, into)
    return into


def _download(url: str, partial: Path, sha256: str | None, policy: FetchPolicy, progress: Progress | None) -> None:
    try:
        for attempt in range(1, policy.attempts + 1):
            try:
                got = _attempt(url, partial, policy, progress)
                break
            except _Retry as why:
                if attempt == policy.attempts:
                    raise BuildError(f"downloading {url} failed after {attempt} attempts ({why})",
                                     "check the network, the proxy settings and the server") from None
                delay = policy.backoff * 2 ** (attempt - 1)
                log.info("download of %s failed (%s); retrying in %.1f s", url, why, delay)
                time.sleep(delay)
        if sha256 is not None and got != sha256:
            raise UserError(f"{url} has sha256 {got}, not the pinned {sha256}",
                            "check the URL and the digest; nothing was installed")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
