"""Debian-family bootstrap through mmdebstrap.

mmdebstrap runs in unshare mode: its mounts live in a private namespace that vanishes with
it, so an interrupted build can never leave the host's /proc or /dev mounted in staging.
It writes a tarball whose entries are owned 0/0, which also serves as the cache entry.
"""

from __future__ import annotations

from pathlib import Path

from osbuilder.backends.base import Backend, BootstrapRequest
from osbuilder.runner import Runner

BOOTSTRAP_TIMEOUT_S = 3600


class AptBackend(Backend):
    name = "apt"

    def bootstrap_tarball(self, request: BootstrapRequest, tarball: Path, runner: Runner) -> None:
        argv = [
            "mmdebstrap",
            "--mode=unshare",
            "--variant=required",
            "--format=tar",
            f"--arch={request.arch.debian}",
            f"--components={','.join(request.components)}",
        ]
        if request.packages:
            argv.append(f"--include={','.join(request.packages)}")
        argv += [request.release, str(tarball), request.mirror]
        env = {}
        if request.source_date_epoch is not None:
            env["SOURCE_DATE_EPOCH"] = str(request.source_date_epoch)
        runner.run(argv, env=env, timeout=BOOTSTRAP_TIMEOUT_S,
                   hint=f"check --mirror {request.mirror}, --release and the package names")
