"""`osbuilder distros`: every distro x release x arch x init-mode combination the recipes
support, with the defaults, the package manager and how each recipe is proven."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from osbuilder.rootfs.recipes import PROOFS, load_all


@dataclass(frozen=True)
class MatrixRow:
    distro: str
    aliases: list[str]
    release: str
    default_release: bool
    arch: str
    init_mode: str
    backend: str
    mirror: str
    proven: str


def matrix(recipes_dir: Path | None) -> list[MatrixRow]:
    return [MatrixRow(recipe.name, list(recipe.aliases), release, release == recipe.default_release, arch, mode,
                      recipe.backend.name, recipe.mirror_for(arch), recipe.proven)
            for recipe in load_all(recipes_dir)
            for release in recipe.releases
            for arch in recipe.arches
            for mode in recipe.init_modes]


# Ways to make a tree besides a recipe's packages; they hold for every row above.
METHODS = {
    "dracut": "--method dracut: this build host's own system reduced by dracut (the recipe that names the "
              "host's distribution, the host's release and arch, every init mode); proven by booting it",
    "existing": "--existing DIR: a tree you bootstrapped, provisioned by osbuilder (any recipe, arch, init mode)",
}


def matrix_json(rows: list[MatrixRow]) -> dict:
    return {"combinations": [asdict(row) for row in rows], "proven": PROOFS, "methods": METHODS}


def matrix_table(rows: list[MatrixRow]) -> str:
    header = ("DISTRO", "RELEASE", "ARCH", "INIT MODE", "BACKEND", "PROVEN AGAINST")
    body = [(row.distro + (f" ({', '.join(row.aliases)})" if row.aliases else ""),
             row.release + (" *" if row.default_release else ""), row.arch, row.init_mode, row.backend, row.proven)
            for row in rows]
    widths = [max(len(line[i]) for line in [header, *body]) + 2 for i in range(len(header) - 1)]
    lines = ["".join(cell.ljust(width) for cell, width in zip(line, widths)) + line[-1] for line in [header, *body]]
    legend = ["", "* the distro's default release; --arch defaults to the host's."]
    legend += [f"{kind}: {meaning}" for kind, meaning in PROOFS.items()]
    legend += ["", "Other methods:"] + [f"  {text}" for text in METHODS.values()]
    return "\n".join(lines + legend)
