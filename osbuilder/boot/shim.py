"""The boot shim: a small initrd that lets a stock distribution kernel boot a disk image.

Stock kernels build virtio, the filesystems, dm-verity and NVDIMM as modules, so the root
cannot be mounted before something loads them. The shim is busybox-static, those modules
(resolved through modules.dep), dmsetup when the root is dm-verity, and an /init rendered
from templates/boot-shim-init.sh.j2.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import magic

from osbuilder.foundation.arch import Arch, host_arch
from osbuilder.boot.debian_archive import DebianArchive
from osbuilder.boot.kernel import unpack_deb
from osbuilder.boot.modules import DEVICE_MODULES, ModuleIndex
from osbuilder.foundation.errors import UserError
from osbuilder.pack.compress import compressing, get_codec
from osbuilder.pack.cpio import archive_tree
from osbuilder.foundation.runner import PROBE, Runner
from osbuilder.foundation.templates import Templates
from osbuilder.foundation.tools import HostTools

SHIM_ERROR = "OSBUILDER-SHIM-ERROR"
DEVICE_WAIT_SECONDS = 30


@dataclass(frozen=True)
class ShimRequest:
    arch: Arch
    modules_dir: Path
    device: str  # a key of DEVICE_MODULES
    root_modules: tuple[str, ...]  # what mounts the root (the artifact's packer says)
    verity: bool  # the shim sets up dm-verity, so it needs dmsetup


def busybox_for(arch: Arch, cache: Path, runner: Runner) -> Path:
    """The host's busybox-static when it runs the target's code, else Debian's for the arch."""
    host = Path("/bin/busybox")
    if arch == host_arch() and host.is_file() and "statically linked" in magic.from_file(str(host)):
        return host
    deb = DebianArchive(arch, cache).download("busybox-static", runner)
    tree = unpack_deb(deb, cache / "unpacked" / deb.stem, runner)
    return tree / "bin/busybox"


def _copy_with_libraries(binary: str, root: Path, runner: Runner) -> None:
    """A dynamically linked host tool and the libraries ldd names, at their host paths
    (the tool's directory is on the shim's PATH: /sbin or /usr/sbin)."""
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin")
    if path is None:
        raise UserError(f"required tool '{binary}' is not installed", "run ./setup.sh to install it")
    needed = [path] + re.findall(r"(/\S+) \(0x", runner.run(["ldd", path], limit=PROBE).stdout)
    for source in needed:
        target = root / source.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(source).resolve(), target)


def build_shim(request: ShimRequest, output: Path, workdir: Path, cache: Path, templates: Templates,
               runner: Runner) -> list[str]:
    """Write the shim initrd (gzip, which every kernel unpacks) and return the modules it loads."""
    index = ModuleIndex.load(request.modules_dir, workdir, runner)
    wanted = DEVICE_MODULES[request.device] + request.root_modules
    modules = index.resolve(wanted)
    root = workdir / "shim"
    shutil.rmtree(root, ignore_errors=True)
    (root / "bin").mkdir(parents=True)
    (root / "lib/modules").mkdir(parents=True)
    shutil.copy2(busybox_for(request.arch, cache, runner), root / "bin/busybox")
    flat = []
    for relative in modules:
        name = Path(relative).name.removesuffix(".xz").removesuffix(".gz")
        (root / "lib/modules" / name).write_bytes(index.read(relative))
        flat.append(name)
    if request.verity:
        if request.arch != host_arch():
            raise UserError(f"a dm-verity boot shim for {request.arch.name} needs that arch's dmsetup; "
                            f"this host is {host_arch().name}", "boot verity images on a host of the same arch")
        _copy_with_libraries("dmsetup", root, runner)
    init = root / "init"
    init.write_text(templates.render("boot-shim-init.sh.j2", modules=flat, error_marker=SHIM_ERROR,
                                     device_wait_tenths=DEVICE_WAIT_SECONDS * 10))
    init.chmod(0o755)
    with open(output, "wb") as out:
        with compressing(get_codec("gzip"), 6, out, HostTools.probe(), runner) as stream:
            archive_tree(root, stream, epoch=0)
    return flat
