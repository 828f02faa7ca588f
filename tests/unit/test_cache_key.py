"""The bootstrap cache key is made of the whole install request, whatever its fields, so an
input that changes the installed tree cannot be left out of it by accident."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from osbuilder.foundation.arch import get_arch
from osbuilder.foundation.cache import inputs_key
from osbuilder.rootfs.recipes import load_recipe
from osbuilder.rootfs.backends import InstallRequest
from osbuilder.rootfs.backends.base import RELEASE, SECURITY, PackageSource
from osbuilder.rootfs.bootstrap import bootstrap_inputs


@dataclass(frozen=True)
class WiderRequest(InstallRequest):
    """An install request as a later change might make it: one field more."""

    kernel_flavour: str = "generic"


def key(request: InstallRequest) -> str:
    return inputs_key(bootstrap_inputs(request, load_recipe("debian", None), "mmdebstrap 1.3.5"))


def request(**changes) -> WiderRequest:
    recipe = load_recipe("debian", None)
    base = WiderRequest(distro="debian", release="bookworm", arch=get_arch("x86_64"), packages=("a", "b"),
                        mirror="http://deb.debian.org/debian", section=recipe.backend_section,
                        source_date_epoch=1700000000)
    return dataclasses.replace(base, **changes)


def test_a_field_added_to_the_install_request_changes_the_key_by_itself():
    assert key(request()) == key(request()), "the key is not stable"
    assert key(request(kernel_flavour="rt")) != key(request()), "a new field did not reach the key"


def test_every_field_of_the_install_request_is_in_the_key():
    others = {"distro": "ubuntu", "release": "trixie", "arch": get_arch("aarch64"), "packages": ("a", "c"),
              "mirror": "http://mirror.example/debian", "source_date_epoch": 1700000001,
              "section": dataclasses.replace(load_recipe("debian", None).backend_section, components=("main", "x")),
              "world": ("a",), "kernel_flavour": "rt",
              "sources": (PackageSource("bookworm", "http://deb.debian.org/debian", RELEASE),
                          PackageSource("bookworm-security", "http://deb.debian.org/debian-security", SECURITY))}
    assert set(others) == {f.name for f in dataclasses.fields(WiderRequest)}, "a field has no changed value here"
    for name, value in others.items():
        assert key(request(**{name: value})) != key(request()), f"{name} is not in the key"
    # The package set is a set: the order the recipe lists them in does not matter.
    assert key(request(packages=("b", "a"))) == key(request())


def test_the_indexes_digests_are_in_the_key():
    """A cached bootstrap is reused only while the suites' indexes are what it was installed
    from: a moved security suite is a different key."""
    recipe = load_recipe("debian", None)
    before = {"bookworm": "a" * 64, "bookworm-security": "b" * 64}
    moved = {**before, "bookworm-security": "c" * 64}

    def keyed(digests: dict) -> str:
        return inputs_key(bootstrap_inputs(request(), recipe, "mmdebstrap 1.3.5", tuple(digests.items())))

    assert keyed(before) == keyed(dict(before))
    assert keyed(moved) != keyed(before)
    assert keyed({}) != keyed(before)


def test_backends_see_only_the_install_request():
    """What a package manager is given is all it can install from: a backend that read the
    rootfs options could depend on something the key leaves out."""
    from pathlib import Path

    import osbuilder

    backends = Path(osbuilder.__file__).parent / "rootfs" / "backends"
    for path in backends.rglob("*.py"):
        text = path.read_text()
        for forbidden in ("osbuilder.rootfs.options", "osbuilder.config", "RootfsOptions"):
            assert forbidden not in text, f"{path} uses {forbidden}"
