"""Which kernel modules a boot needs, in load order, resolved the way modprobe does:
hard dependencies from modules.dep, soft ones (`pre:`) through modules.softdep and
modules.alias. `depmod -n` computes all three without writing into the user's directory.
"""

from __future__ import annotations

import gzip
import lzma
import os
from dataclasses import dataclass, field
from pathlib import Path

from osbuilder.foundation.errors import UserError
from osbuilder.foundation.runner import PROBE, Runner

# What each root device needs on a stock distribution kernel, by module name; what mounts
# the root on it comes from the artifact's packer (Packer.boot_modules). Dependencies are
# not listed: they come from the index.
DEVICE_MODULES: dict[str, tuple[str, ...]] = {
    "virtio-blk": ("virtio_pci", "virtio_blk"),
    "virtio-blk-ccw": ("virtio_blk",),
    "nvdimm": ("nfit", "nd_pmem"),
}


def module_name(path: str) -> str:
    base = os.path.basename(path)
    for suffix in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


@dataclass
class ModuleIndex:
    """modules.dep, modules.alias and modules.softdep of one kernel version."""

    root: Path  # lib/modules/<version>
    paths: dict[str, str] = field(default_factory=dict)  # name -> path relative to root
    deps: dict[str, list[str]] = field(default_factory=dict)  # name -> names, in load order
    aliases: dict[str, list[str]] = field(default_factory=dict)
    soft_pre: dict[str, list[str]] = field(default_factory=dict)
    builtin: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, modules_dir: Path, workdir: Path, runner: Runner) -> "ModuleIndex":
        modules_dir = Path(modules_dir).resolve()
        version = modules_dir.name
        # depmod -b wants BASE/lib/modules/VERSION; a link keeps the user's directory untouched.
        base = workdir / "depmod-base"
        (base / "lib/modules").mkdir(parents=True, exist_ok=True)
        link = base / "lib/modules" / version
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(modules_dir)
        text = runner.run(["depmod", "-n", "-b", str(base), version],
                          hint="pass --modules the lib/modules/<version> directory of the kernel", limit=PROBE).stdout
        index = cls(root=modules_dir)
        for line in text.splitlines():
            if line.startswith("alias "):
                _, alias, name = line.split(maxsplit=2)
                index.aliases.setdefault(alias, []).append(name.replace("-", "_"))
            elif line.startswith("softdep "):
                words = line.split()
                pre = words[words.index("pre:") + 1:] if "pre:" in words else []
                if "post:" in pre:
                    pre = pre[: pre.index("post:")]
                index.soft_pre[words[1].replace("-", "_")] = pre
            elif ".ko" in line and ":" in line and not line.startswith("#"):
                path, _, deps = line.partition(":")
                name = module_name(path)
                index.paths[name] = path
                # modules.dep lists dependencies nearest first; loading goes the other way.
                index.deps[name] = [module_name(d) for d in reversed(deps.split())]
        builtin = modules_dir / "modules.builtin"
        if builtin.exists():
            index.builtin = {module_name(line) for line in builtin.read_text().split()}
        if not index.paths:
            raise UserError(f"no kernel modules found under '{modules_dir}'",
                            "pass --modules the lib/modules/<version> directory of the kernel you boot")
        return index

    def _provider(self, wanted: str) -> str | None:
        """A module that satisfies `wanted` (a name or an alias); the portable _generic
        implementation first, since CPU-specific ones fail on emulated CPUs."""
        if wanted in self.paths or wanted in self.builtin:
            return wanted
        providers = [n for n in self.aliases.get(wanted, []) if n in self.paths or n in self.builtin]
        providers.sort(key=lambda n: (not n.endswith("_generic"), n))
        return providers[0] if providers else None

    def resolve(self, wanted: tuple[str, ...]) -> list[str]:
        """Module paths (relative to root) to insmod, dependencies first; built-ins skipped."""
        order: list[str] = []
        seen: set[str] = set()

        def visit(name: str, required: bool) -> None:
            provider = self._provider(name)
            if provider is None:
                if required:
                    raise UserError(f"kernel module '{name}' is not in {self.root}",
                                    "use a kernel whose modules include it, or one that has it built in")
                return
            if provider in seen:
                return
            seen.add(provider)
            for soft in self.soft_pre.get(provider, []):
                visit(soft, required=False)
            for dep in self.deps.get(provider, []):
                visit(dep, required=True)
            if provider in self.paths:
                order.append(self.paths[provider])

        for name in wanted:
            visit(name, required=True)
        return order

    def read(self, relative: str) -> bytes:
        """A module's bytes, decompressed: busybox insmod takes plain ELF objects."""
        data = (self.root / relative).read_bytes()
        if relative.endswith(".xz"):
            return lzma.decompress(data)
        if relative.endswith(".gz"):
            return gzip.decompress(data)
        if relative.endswith(".zst"):
            raise UserError(f"module {relative} is zstd-compressed", "unpack the modules with `unzstd` first")
        return data
