"""The apk installer as a command: what an unprivileged build runs as root of a user
namespace (ApkBackend._install_unprivileged). Usage: JOB INSTALLROOT WORKDIR REFUSAL.

A refusal (bad input: an unsigned index, a package that fails its checks) is written to
REFUSAL as JSON for the build to report as its own one-line error; exit code 2."""

from __future__ import annotations

import json
import logging
import pickle
import sys
from pathlib import Path

from osbuilder.foundation.errors import EXIT_BAD_INPUT, UserError
from osbuilder.rootfs.backends.apk.backend import ApkBackend, InstallJob
from osbuilder.foundation.runner import Runner


def main(argv: list[str]) -> int:
    job_path, installroot, workdir, refusal = argv
    job: InstallJob = pickle.loads(Path(job_path).read_bytes())
    logging.basicConfig(format="osbuilder: %(message)s", stream=sys.stderr)
    for name, level in job.log_levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        ApkBackend().install(job.request, Path(installroot), Path(workdir), Runner(), job.downloads)
    except UserError as exc:
        Path(refusal).write_text(json.dumps({"message": exc.message, "hint": exc.hint}))
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
