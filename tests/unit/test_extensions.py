"""Extension images (docs/kata-contract.md, composable guests): built from a tree, checked with and without a
base, packed as erofs with dm-verity and no DAX header, listed in the runtime fragment, and
compared by `check`. Real trees, real mkfs.erofs and veritysetup, real ELFs from this host."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from osbuilder.config import make_config, make_rootfs_options
from osbuilder.foundation.errors import UserError
from osbuilder.pack.verity import format_verity, read_root_hash
from osbuilder.foundation.runner import Runner
from osbuilder.rootfs.extension_mount import name_problem
from osbuilder.rootfs.initmode import INIT_MODES, recognise_init_mode
from osbuilder.read.view import DirView
from tests.conftest import run_cli
from tests.unit.test_closure import LIBC

SHARE = "opt/kata/share/kata-containers"


def extension_tree(root: Path, with_elf: bool = False) -> Path:
    """A small extension: a config file and a script; with_elf, the host's `true` (dynamically
    linked against the C library, which the tree does not hold)."""
    (root / "usr/bin").mkdir(parents=True)
    (root / "etc/coco").mkdir(parents=True)
    (root / "etc/coco/agent.toml").write_text("[attestation]\nenabled = true\n")
    (root / "usr/bin/hello").write_text("#!/bin/sh\necho hello\n")
    if with_elf:  # and a script that runs the base's shell
        shutil.copy("/usr/bin/true", root / "usr/bin/true")
        (root / "usr/bin/hello").chmod(0o755)
    return root


def base_tree(root: Path) -> Path:
    """What an extension's ELF needs from its base: /bin/sh and the C library."""
    for path in LIBC:
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / path.lstrip("/"))
    (root / "bin").mkdir()
    shutil.copy("/bin/busybox", root / "bin/sh")
    (root / "etc").mkdir()
    (root / "etc/ld.so.conf").write_text("/lib/x86_64-linux-gnu\n")
    return root


def build_extension(tmp_path: Path, tree: Path, *extra: str, name: str = "coco") -> Path:
    out = tmp_path / f"out-{name}"
    result = run_cli("build", "--distro", "debian", "--init", "none", "--extension", name, "--existing", tree,
                     "-o", out, "--json", *extra)
    assert result.returncode == 0, result.stderr
    return out


# -- options -----------------------------------------------------------------------------

@pytest.mark.parametrize("values, words", [
    ({}, "pass --extension NAME"),
    ({"extension": ("a.b",)}, "Kata's generator skips"),
    ({"extension": ("eleven-char",)}, "would not fit virtio-blk's 20 bytes"),
    ({"extension": ("a", "b")}, "one build makes one extension image"),
    ({"extension": ("coco",), "probe_agent": True}, "--probe-agent does not apply to an extension image"),
    ({"extension": ("coco",), "agent": "/bin/true"}, "--agent does not apply"),
    ({"extension": ("coco",), "confidential": True}, "--confidential does not apply"),
    ({"extension": ("coco",), "agent_policy": "default"}, "--agent-policy does not apply"),
])
def test_an_extension_build_refuses_what_it_cannot_be(values, words):
    with pytest.raises(UserError) as caught:
        make_rootfs_options({"distro": "debian", "init": "none", "arch": "x86_64", **values})
    assert words in str(caught.value)


@pytest.mark.parametrize("flag", ["extension", "base", "allow_setuid"])
def test_extension_flags_are_refused_for_a_base(flag):
    value = {"extension": ("coco",), "base": "/", "allow_setuid": True}[flag]
    with pytest.raises(UserError, match="applies to an extension image"):
        make_rootfs_options({"distro": "debian", "init": "systemd", "probe_agent": True, flag: value})


def test_an_extension_is_erofs_with_verity_no_dax_and_kata_s_names(tmp_path):
    config, _ = make_config({"distro": "debian", "init": "none", "extension": ("coco",), "existing": tmp_path,
                             "layout": "kata", "output": tmp_path / "o"})
    image = config.packing["image"]
    assert config.formats == ("image",) and (image.fs, image.verity, image.dax) == ("erofs", True, False)
    assert config.release.variant == "coco-extension" and image.root_hash_label == "coco-extension"
    # Given values win; what an extension cannot be is refused.
    config, _ = make_config({"distro": "debian", "init": "none", "extension": ("nv",), "existing": tmp_path,
                             "verity": False, "output": tmp_path / "o"})
    assert config.packing["image"].verity is False
    for values, words in (({"formats": ("initrd",)}, "pack it as a disk image"),
                          ({"fs": "ext4"}, "an extension image is erofs")):
        with pytest.raises(UserError, match=words):
            make_config({"distro": "debian", "init": "none", "extension": ("nv",), "existing": tmp_path,
                         "output": tmp_path / "o", **values})


def test_the_recipe_s_packages_stay_out_of_an_extension():
    options, recipe = make_rootfs_options({"distro": "debian", "init": "none", "extension": ("devkit",),
                                           "extra_packages": ("busybox-static",), "arch": "x86_64"})
    assert recipe.packages_for(options.arch, options.init, options.seccomp) == ()
    assert recipe.packages_for(options.arch, "systemd", True) != ()


def test_with_extension_needs_a_base_that_mounts_extensions(tmp_path):
    image = tmp_path / "e.img"
    image.write_bytes(b"x")
    for init in ("agent", "launcher"):
        values = {"distro": "debian", "init": init, "probe_agent": True, "with_extension": (f"coco={image}",),
                  "output": tmp_path / "o"}
        if init == "launcher":
            values["launcher"] = "/bin/true"
        with pytest.raises(UserError, match="needs a base that mounts extension images"):
            make_config(values)
    for value, words in ((f"coco{image}", "is not NAME=IMAGE"), (f"bad!={image}", "Kata's generator skips")):
        with pytest.raises(UserError, match=words):
            make_config({"distro": "debian", "init": "systemd", "probe_agent": True, "with_extension": (value,),
                         "output": tmp_path / "o"})
    with pytest.raises(UserError, match="names the extension 'coco' twice"):
        make_config({"distro": "debian", "init": "systemd", "probe_agent": True, "output": tmp_path / "o",
                     "with_extension": (f"coco={image}", f"coco={image}")})


def test_missing_base_and_extension_images_are_refused_as_the_build_starts(tmp_path):
    """Checked when the build starts, not with the other settings: in a matrix, the base or the
    extension may be a target built first. Still exit 2 before any work, nothing written."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for extra, words in ((("--init", "none", "--extension", "coco", "--existing", tree, "--base", "/nonexistent"),
                          "--base '/nonexistent' does not exist"),
                         (("--init", "systemd", "--probe-agent", "--with-extension", "coco=/nonexistent"),
                          "--with-extension coco: '/nonexistent' does not exist")):
        result = run_cli("build", "--distro", "debian", *extra, "-o", tmp_path / "out")
        assert result.returncode == 2 and words in result.stderr, result.stderr
        assert not (tmp_path / "out").exists()


def test_names_the_generator_accepts():
    assert name_problem("nvidia-gpu") is None and name_problem("dev_kit1") is None
    assert name_problem("a b") and name_problem("x=y") and name_problem("") and name_problem("abcdefghijk")


def test_a_tree_with_neither_init_nor_agent_is_recognised_as_an_extension(tmp_path):
    root = extension_tree(tmp_path / "t")
    mode, why = recognise_init_mode(DirView(root))
    assert mode is INIT_MODES["none"] and "extension" in why
    (root / "sbin").mkdir()
    (root / "sbin/init").write_text("#!/bin/sh\n")
    mode, _ = recognise_init_mode(DirView(root))
    assert mode is not INIT_MODES["none"]


# -- the root hash, as veritysetup computes it ------------------------------------------

@pytest.mark.parametrize("blocks", [1, 200, 20000])  # one, two and three hash levels
def test_the_root_hash_read_from_a_hash_partition_is_veritysetup_s(tmp_path, blocks):
    data = tmp_path / "data"
    with open(data, "wb") as f:
        for i in range(blocks):
            f.write(i.to_bytes(4, "little") * 1024)
    hashes = tmp_path / "hash"
    tree = format_verity(data, hashes, "ab" * 32, Runner())
    combined = tmp_path / "combined"  # as an image holds them: data, then hashes
    combined.write_bytes(data.read_bytes() + hashes.read_bytes())
    hash_offset = data.stat().st_size
    assert read_root_hash(combined, hash_offset, tree.salt, data_offset=0, data_blocks=blocks) == tree.root_hash
    assert read_root_hash(combined, hash_offset, "cd" * 32, data_offset=0, data_blocks=blocks) != tree.root_hash
    verified = subprocess.run(["veritysetup", "verify", "--no-superblock", f"--salt={tree.salt}", str(data),
                               str(hashes), tree.root_hash], capture_output=True)
    assert verified.returncode == 0


# -- builds from a tree -------------------------------------------------------------------

def test_an_extension_built_from_a_tree_is_root_s_measured_and_listed(tmp_path):
    tree = extension_tree(tmp_path / "tree")
    os.chown(tree / "etc/coco/agent.toml", 1234, 1234)
    out = build_extension(tmp_path, tree, "--layout", "kata", "--tarball")
    share = out / SHARE
    image = share / "kata-containers-coco-extension.img"
    assert image.is_symlink() and (share / "kata-debian-bookworm-coco-extension.image").is_file()
    params = (share / "root_hash_coco-extension.txt").read_text().strip()
    assert (out / "kata-static-rootfs-image-coco-extension.tar.zst").is_file()
    fragment = tomllib.loads((out / "kata-runtime.toml").read_text())
    assert fragment == {"hypervisor": {"qemu": {"guest_extension_images": [
        {"name": "coco", "path": f"/{SHARE}/kata-containers-coco-extension.img", "verity_params": params}]}}}
    report = json.loads(run_cli("inspect", image, "--json").stdout)
    assert report["init_mode"]["value"] == "none" and report["cgroup_driver"]["value"] == "none"
    assert report["findings"] == []
    extension = report["extension"]
    assert extension["name"] == "coco" and extension["measured"] and extension["root_hash_verified"] is True
    assert extension["root_hash"] == params.split(",")[0].split("=")[1]
    assert extension["files"] == 3 and "etc" in extension["top_level"]  # two files and osbuilder.yaml
    assert report["layout"]["dax"]["present"] is False and report["layout"]["filesystem"]["type"] == "erofs"
    # Everything in it is root's, whoever owned it in the tree; the tree itself is untouched.
    extracted = tmp_path / "x"
    part = report["layout"]["partition_table"][0]
    fs = tmp_path / "fs.erofs"
    with open(image, "rb") as src, open(fs, "wb") as dst:
        src.seek(part["offset"])
        dst.write(src.read(part["size"]))
    subprocess.run(["fsck.erofs", f"--extract={extracted}", str(fs)], check=True, capture_output=True)
    owners = {(p.lstat().st_uid, p.lstat().st_gid) for p in extracted.rglob("*")}
    assert owners == {(0, 0)}
    assert not (extracted / "etc/machine-id").exists() and not (extracted / "sbin/init").exists()
    assert (tree / "etc/coco/agent.toml").stat().st_uid == 1234


def test_an_extension_of_payloads_alone_starts_empty(tmp_path):
    """--coco-components with no tree and no packages: the extension holds the components and
    its summary, not the recipe's bootstrap (which would repeat the base)."""
    import io
    import tarfile

    components = tmp_path / "kata-static-coco-guest-components.tar"
    with tarfile.open(components, "w") as tar:
        for name, data in (("./usr/local/bin/attestation-agent", Path("/bin/busybox").read_bytes()),  # static
                           ("./etc/ocicrypt_config.json", b"{}\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "out"
    result = run_cli("build", "--distro", "debian", "--init", "none", "--extension", "coco", "--coco-components",
                     components, "--no-verity", "-o", out)
    assert result.returncode == 0, result.stderr
    assert "Starting the extension from an empty tree" in result.stderr and "Bootstrapping" not in result.stderr
    report = json.loads(run_cli("inspect", out / "kata-containers.img", "--json").stdout)
    assert report["extension"]["files"] == 3 and set(report["extension"]["top_level"]) == {"etc", "usr", "var"}  # var: the summary


def test_an_unmeasured_extension_has_an_empty_verity_line(tmp_path):
    out = build_extension(tmp_path, extension_tree(tmp_path / "tree"), "--no-verity", name="plain")
    fragment = tomllib.loads((out / "kata-runtime.toml").read_text())
    assert fragment["hypervisor"]["qemu"]["guest_extension_images"] == [
        {"name": "plain", "path": "/opt/kata/share/kata-containers/kata-containers.img", "verity_params": ""}]


def test_setuid_files_need_allow_setuid(tmp_path):
    tree = extension_tree(tmp_path / "tree")
    shutil.copy("/bin/busybox", tree / "usr/bin/su")
    (tree / "usr/bin/su").chmod(0o4755)
    result = run_cli("build", "--distro", "debian", "--init", "none", "--extension", "coco", "--existing", tree,
                     "-o", tmp_path / "refused")
    assert result.returncode == 2 and "setuid or setgid files: /usr/bin/su" in result.stderr
    assert not (tmp_path / "refused").exists()
    out = build_extension(tmp_path, tree, "--allow-setuid")
    report = json.loads(run_cli("inspect", out / "kata-containers.img", "--json").stdout)
    assert report["findings"] == []


def test_an_extension_holding_an_init_is_refused(tmp_path):
    tree = extension_tree(tmp_path / "tree")
    (tree / "sbin").mkdir()
    shutil.copy("/bin/busybox", tree / "sbin/init")
    result = run_cli("build", "--distro", "debian", "--init", "none", "--extension", "coco", "--existing", tree,
                     "-o", tmp_path / "o")
    assert result.returncode == 2 and "holds no init and no agent, but the tree has /sbin/init" in result.stderr


def test_the_closure_looks_in_the_base_only_when_given(tmp_path):
    tree = extension_tree(tmp_path / "tree", with_elf=True)
    result = run_cli("build", "--distro", "debian", "--init", "none", "--extension", "coco", "--existing", tree,
                     "-o", tmp_path / "alone")
    assert result.returncode == 2 and "/usr/bin/hello needs its interpreter /bin/sh" in result.stderr
    assert "/usr/bin/true needs its dynamic linker" in result.stderr
    base = base_tree(tmp_path / "base")
    build_extension(tmp_path, tree, "--base", base)
    (base / "lib/x86_64-linux-gnu/libc.so.6").unlink()
    result = run_cli("build", "--distro", "debian", "--init", "none", "--extension", "coco", "--existing", tree,
                     "--base", base, "-o", tmp_path / "thin")
    assert result.returncode == 2 and "the library libc.so.6" in result.stderr
    assert "looked up in the extension and its base" in result.stderr
