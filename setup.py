"""Packaging: the recipes (distros/), templates (templates/) and JSON schemas (schemas/) live
at the top of the repository and ship inside the package as osbuilder/data/, so a wheel works
from anywhere."""

import sys
from pathlib import Path

from setuptools import find_packages, setup

DATA = {"osbuilder.data.distros": "distros", "osbuilder.data.templates": "templates",
        "osbuilder.data.schemas": "schemas"}


def data_packages() -> dict[str, list[str]]:
    """Every directory of the data trees as a package, with the files directly in it: a recipe
    may keep keyrings of any kind beside it (.gpg, .asc, .pub, in subdirectories), and what
    works from a checkout must work installed. setuptools treats every directory as a
    package, so each one is declared (an undeclared one is warned about on every install)."""
    packages: dict[str, list[str]] = {}
    top = Path(__file__).resolve().parent
    for package, directory in DATA.items():
        root = top / directory
        for folder in sorted([root, *(p for p in root.rglob("*") if p.is_dir() and p.name != "__pycache__")]):
            name = ".".join([package, *folder.relative_to(root).parts])
            packages[name] = sorted(p.name for p in folder.iterdir() if p.is_file())
    return packages


if "editable_wheel" in sys.argv:
    # A checkout's install (setup.sh's `pip install -e`) imports the package from here, and
    # the package finds distros/ and templates/ beside it (foundation/resources.py): a plain
    # .pth entry, the one editable mode setuptools installs without warnings.
    setup(packages=find_packages(include=["osbuilder", "osbuilder.*"]), package_dir={"": "."})
else:
    DATA_PACKAGES = data_packages()
    setup(packages=find_packages(include=["osbuilder", "osbuilder.*"]) + list(DATA_PACKAGES),
          package_dir=DATA, package_data=DATA_PACKAGES)
