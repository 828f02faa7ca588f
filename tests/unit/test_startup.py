"""Each command imports what it runs and no more: the front end loads a command's settings and
code when that command is chosen (issue 27: `image` paid for qemu's harness at start-up). The
modules are counted, never the time: the times are in benchmarks/README.md."""

from __future__ import annotations

import subprocess
import sys

import pytest

LIST_MODULES = """
import sys
from osbuilder.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(" ".join(sorted(name for name in sys.modules if name.startswith(("osbuilder", "jinja2", "magic")))),
      file=sys.stderr)
"""


def imported(*argv: str) -> set[str]:
    result = subprocess.run([sys.executable, "-c", LIST_MODULES, *argv], capture_output=True, text=True, timeout=60)
    return set(result.stderr.strip().splitlines()[-1].split())


def under(modules: set[str], *packages: str) -> set[str]:
    return {m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)}


def test_the_command_list_imports_no_command():
    modules = imported("--help")
    assert modules <= {"osbuilder", "osbuilder.cli", "osbuilder.pack", "osbuilder.pack.catalog",
                       "osbuilder.foundation", "osbuilder.foundation.errors", "osbuilder.foundation.events",
                       "osbuilder.foundation.privilege", "osbuilder.foundation.progress",
                       "osbuilder.foundation.runner", "osbuilder.foundation.settings"}, modules


@pytest.mark.parametrize("argv,never", [
    (("distros",), ("osbuilder.boot", "osbuilder.inspect", "osbuilder.check", "osbuilder.build", "osbuilder.config",
                    "osbuilder.release", "osbuilder.host", "osbuilder.pack.registry", "osbuilder.pack.image",
                    "osbuilder.matrix", "osbuilder.foundation.templates", "osbuilder.foundation.yaml_documents",
                    "jinja2", "magic")),
    (("image", "--help"), ("osbuilder.boot", "osbuilder.inspect", "osbuilder.check", "osbuilder.build",
                           "osbuilder.matrix", "osbuilder.updates", "osbuilder.rootfs.stage")),
    # A packer command, run until it refuses the missing tree: its own packer and the tree's
    # checks, none of the pipeline's settings, the other packers, the backends or the renderer.
    (("image", "/nonexistent/osbuilder-tree", "-o", "/tmp/osbuilder-startup-never-written.img"),
     ("osbuilder.boot", "osbuilder.build", "osbuilder.config", "osbuilder.matrix", "osbuilder.release",
      "osbuilder.rootfs.stage", "osbuilder.rootfs.bootstrap", "osbuilder.pack.registry", "osbuilder.pack.initrd",
      "osbuilder.pack.iso", "osbuilder.rootfs.backends.apt", "osbuilder.rootfs.backends.dnf",
      "osbuilder.rootfs.backends.apk", "osbuilder.foundation.templates", "jinja2", "magic")),
    (("inspect", "--help"), ("osbuilder.boot", "osbuilder.build", "osbuilder.config", "osbuilder.rootfs.stage",
                             "osbuilder.matrix")),
    (("check", "--help"), ("osbuilder.boot", "osbuilder.build", "osbuilder.config", "osbuilder.matrix")),
    (("cache", "list", "--cache-dir", "/nonexistent/osbuilder-cache"),
     ("osbuilder.boot", "osbuilder.rootfs", "osbuilder.pack.registry", "osbuilder.inspect", "osbuilder.matrix",
      "osbuilder.config")),
    (("boot", "--help"), ("osbuilder.boot.session", "osbuilder.pack.registry", "osbuilder.rootfs", "osbuilder.read",
                          "osbuilder.config")),
])
def test_a_command_imports_only_what_it_runs(argv, never):
    modules = imported(*argv)
    assert "osbuilder.cli" in modules  # the listing ran
    assert not under(modules, *never), sorted(under(modules, *never))
