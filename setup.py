"""Packaging: the recipes (distros/) and templates (templates/) live at the top of the
repository and ship inside the package as osbuilder/data/, so a wheel works from anywhere."""

from setuptools import find_packages, setup

DATA = {"osbuilder.data.distros": "distros", "osbuilder.data.templates": "templates"}

setup(
    packages=find_packages(include=["osbuilder", "osbuilder.*"]) + list(DATA),
    package_dir=DATA,
    package_data={"osbuilder.data.distros": ["*.toml"], "osbuilder.data.templates": ["*.j2"]},
)
