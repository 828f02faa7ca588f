"""Packaging: the recipes (distros/), templates (templates/) and JSON schemas (schemas/) live
at the top of the repository and ship inside the package as osbuilder/data/, so a wheel works
from anywhere."""

from setuptools import find_packages, setup

DATA = {"osbuilder.data.distros": "distros", "osbuilder.data.templates": "templates",
        "osbuilder.data.schemas": "schemas"}

setup(
    packages=find_packages(include=["osbuilder", "osbuilder.*"]) + list(DATA),
    package_dir=DATA,
    package_data={"osbuilder.data.distros": ["*.toml", "keys/*/*.pub"], "osbuilder.data.templates": ["*.j2"],
                  "osbuilder.data.schemas": ["*.json"]},
)
