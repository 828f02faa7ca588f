"""Packaging: the recipes (distros/), templates (templates/) and JSON schemas (schemas/) live
at the top of the repository and ship inside the package as osbuilder/data/, so a wheel works
from anywhere."""

from pathlib import Path

from setuptools import find_packages, setup

DATA = {"osbuilder.data.distros": "distros", "osbuilder.data.templates": "templates",
        "osbuilder.data.schemas": "schemas"}


def files_under(directory: str) -> list[str]:
    """Every file of a data directory, whatever its name: a recipe may keep keyrings of any
    kind beside it (.gpg, .asc, .pub), and what works from a checkout must work installed."""
    root = Path(__file__).resolve().parent / directory
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


setup(
    packages=find_packages(include=["osbuilder", "osbuilder.*"]) + list(DATA),
    package_dir=DATA,
    package_data={package: files_under(directory) for package, directory in DATA.items()},
)
