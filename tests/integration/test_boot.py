"""Every artifact proven by booting it: qemu-system (TCG) with Debian's own kernel package,
fetched once by `--kernel debian` into the test cache, and the probe agent inside.

Each boot asserts the probe's line: the init mode the image records, and the cgroup driver
the agent's rule gives for the host driver passed on the kernel command line.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import time
from pathlib import Path

import pytest

from osbuilder.boot.debian_archive import DebianArchive
from osbuilder.foundation.arch import host_arch
from osbuilder.foundation.runner import Runner
from tests.conftest import run_cli
from tests.integration.booting import BOOT_TIMEOUT, assert_probe, boot, pack, probe_tree
from tests.helpers import validate_manifest

pytestmark = pytest.mark.slow

# -- initrds ------------------------------------------------------------------------------
@pytest.mark.parametrize("init", ["agent", "systemd"])
@pytest.mark.parametrize("host_driver", ["systemd", "cgroupfs"])
def test_initrd_boots_and_reports_its_init_mode_and_driver(rootfs, boot_cache, tmp_path, init, host_driver):
    tree = probe_tree(rootfs, init)
    initrd = pack("initrd", tree, tmp_path / "initrd.img")
    result, report = boot(initrd, boot_cache, "--host-cgroup-driver", host_driver)
    probe = assert_probe(result, report, tree, host_driver)
    assert report["pvh"] is True and report["device"] is None
    assert report["recorded_init_mode"] == init  # read from inside the compressed initrd
    # systemd mounts the unified hierarchy; the agent as init mounts v1 like kata-agent.
    assert probe["cgroup"] == ("v2" if init == "systemd" else "v1")


# -- disk images --------------------------------------------------------------------------
@pytest.mark.parametrize("init", ["agent", "systemd"])
def test_ext4_on_virtio_blk(rootfs, boot_cache, tmp_path, init):
    tree = probe_tree(rootfs, init)
    image = pack("image", tree, tmp_path / "plain.img", "--no-dax")
    result, report = boot(image, boot_cache, "--host-cgroup-driver", "systemd",
                          "--console-log", str(tmp_path / "console.txt"))
    assert_probe(result, report, tree, "systemd")
    assert report["device"] == "virtio-blk" and report["recorded_init_mode"] == init
    text = (tmp_path / "console.txt").read_text()
    assert "osbuilder-shim: mounted /dev/vda1 (ext4) dax=0" in text and "EXT4-fs (vda1): mounted" in text


def test_a_kernel_file_with_a_modules_directory_boots_an_image(rootfs, boot_cache, tmp_path):
    """The path for users with their own kernel: --kernel vmlinuz --modules lib/modules/<v>."""
    from osbuilder.foundation.arch import get_arch
    from osbuilder.boot.debian_archive import DebianArchive
    from osbuilder.boot.kernel import kernel_from_deb
    from osbuilder.foundation.runner import Runner

    deb = DebianArchive(get_arch("x86_64"), boot_cache).kernel_package(Runner())
    vmlinuz, modules = kernel_from_deb(deb, boot_cache, Runner())
    tree = probe_tree(rootfs, "agent")
    image = pack("image", tree, tmp_path / "plain.img", "--no-dax")
    result = run_cli("boot", image, "--kernel", vmlinuz, "--modules", modules, "--accel", "tcg", "--json",
                     "--timeout", str(BOOT_TIMEOUT))
    report = json.loads(result.stdout)
    assert_probe(result, report, tree, "none")
    missing = run_cli("boot", image, "--kernel", vmlinuz, "--accel", "tcg")
    assert missing.returncode == 2 and "needs its modules for the boot shim" in missing.stderr


@pytest.mark.parametrize("init", ["agent", "systemd"])
def test_ext4_with_dax_header_on_nvdimm(rootfs, boot_cache, tmp_path, init):
    tree = probe_tree(rootfs, init)
    image = pack("image", tree, tmp_path / "dax.img")
    console = tmp_path / "console.txt"
    result, report = boot(image, boot_cache, "--host-cgroup-driver", "systemd", "--console-log", str(console))
    assert_probe(result, report, tree, "systemd")
    assert report["device"] == "nvdimm"
    text = console.read_text()
    # The kernel built an fsdax namespace from the pfn block (memmap in RAM, 2 MiB
    # alignment), found the partition MBR #2 describes in it, and mounted it with DAX.
    assert ("osbuilder-shim: mounted /dev/pmem0p1 (ext4, dax,data=ordered,errors=remount-ro) dax=1 "
            "pfn0.1:mode=ram,align=2097152") in text, text[-3000:]
    assert "EXT4-fs (pmem0p1): mounted" in text
    assert "root=/dev/pmem0p1" in " ".join(report["command"])


@pytest.mark.parametrize("fs", ["erofs", "xfs"])
def test_erofs_and_xfs_on_virtio_blk(rootfs, boot_cache, tmp_path, fs):
    tree = probe_tree(rootfs, "agent")
    image = pack("image", tree, tmp_path / f"{fs}.img", "--fs", fs, "--no-dax")
    console = tmp_path / "console.txt"
    result, report = boot(image, boot_cache, "--host-cgroup-driver", "systemd", "--console-log", str(console))
    assert_probe(result, report, tree, "systemd")
    assert f"rootfstype={fs}" in " ".join(report["command"])


def test_iso_boots_as_a_read_only_root(rootfs, boot_cache, tmp_path):
    tree = probe_tree(rootfs, "agent")
    iso = pack("iso", tree, tmp_path / "guest.iso")
    console = tmp_path / "console.txt"
    result, report = boot(iso, boot_cache, "--host-cgroup-driver", "systemd", "--console-log", str(console))
    assert_probe(result, report, tree, "systemd")
    assert "osbuilder-shim: mounted /dev/vda (iso9660)" in console.read_text()


def verity_image(rootfs, tmp_path: Path) -> Path:
    return pack("image", probe_tree(rootfs, "agent"), tmp_path / "verity.img", "--verity")


def test_ext4_with_verity_boots_through_dm_verity(rootfs, boot_cache, tmp_path):
    image = verity_image(rootfs, tmp_path)
    console = tmp_path / "console.txt"
    result, report = boot(image, boot_cache, "--host-cgroup-driver", "cgroupfs", "--console-log", str(console))
    assert_probe(result, report, probe_tree(rootfs, "agent"), "cgroupfs")
    command = " ".join(report["command"])
    assert "osbuilder.verity=root_hash=" in command and "osbuilder.verity_hash=/dev/pmem0p2" in command
    assert "device-mapper: verity" in console.read_text()


def test_verity_image_with_one_flipped_data_byte_fails_within_its_timeout(rootfs, boot_cache, tmp_path):
    image = verity_image(rootfs, tmp_path)
    with open(image, "r+b") as f:
        start = struct.unpack_from("<I", f.read(512), 446 + 8)[0] * 512
        f.seek(start + 3000)  # inside the file system's first block, which every mount reads
        byte = f.read(1)[0]
        f.seek(start + 3000)
        f.write(bytes([byte ^ 0x01]))
    timeout = 90
    began = time.monotonic()
    result, report = boot(image, boot_cache, "--console-log", str(tmp_path / "console.txt"), timeout=timeout)
    assert time.monotonic() - began < timeout + 30
    assert result.returncode == 1 and not report["ok"]
    assert report["outcome"] == "shim-error" and "mounting" in report["reason"]
    assert "Input/output error" in report["console_tail"]
    assert re.search(r"verity.*(corrupt|block 0)", (tmp_path / "console.txt").read_text())


# -- the README's first command -----------------------------------------------------------
def test_readme_first_command_builds_and_boots_a_probe_image(cache_dir, boot_cache, tmp_path):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    first = next(line for line in readme.splitlines() if line.startswith("./setup.sh && "))
    build = re.search(r"osbuilder (build [^&]+?) &&", first).group(1).split()
    boot_args = re.search(r"osbuilder (boot .+)$", first).group(1).split()
    out = tmp_path / "guest"
    build = [str(out) if arg == "./guest" else arg for arg in build] + ["--cache-dir", str(cache_dir)]
    built = run_cli(*build)
    assert built.returncode == 0, built.stderr
    assert "warning: this guest holds osbuilder's probe agent" in built.stderr
    manifest = validate_manifest(out / "manifest.json")
    assert manifest["agent"]["probe"] is True and manifest["init_mode"] == "agent"
    assert sorted(a["format"] for a in manifest["artifacts"]) == ["image", "initrd"]
    boot_args = [str(out / Path(arg).name) if arg.startswith("./guest/") else arg for arg in boot_args]
    booted = run_cli(*boot_args, "--cache-dir", boot_cache, "--accel", "tcg")
    assert booted.returncode == 0, booted.stderr
    assert re.match(r"boot: OK in \d+\.\d s \(tcg, PVH vmlinux, nvdimm\)\nprobe: pid=1 init_mode=true ", booted.stdout)
    # The README's sample output is this run's, but for its measured numbers.
    sample = re.search(r"prints what the guest reported:\n\n```\n(.*?)```", readme, re.S).group(1)
    shape = re.sub(r"\d+(?:\\\.\d+)?", r"\\d+(?:\\.\\d+)?", re.escape(sample))  # 3\.6 and 115524 alike
    assert re.fullmatch(shape, booted.stdout), f"README:\n{sample}\nthis run:\n{booted.stdout}"


# -- the harness itself -------------------------------------------------------------------
def _download_seconds(stderr: str) -> float:
    found = re.search(r"^osbuilder: Downloading .*: done in ([\d.]+) s$", stderr, re.M)
    return float(found.group(1)) if found else 0.0


def hanging_initrd(tmp_path: Path) -> Path:
    """An initrd whose /init never finishes and never powers off, so only the timeout can end
    the boot (the probe guest powers off within seconds, which raced a short timeout)."""
    import gzip
    import shutil

    from osbuilder.pack.cpio import archive_tree

    tree = tmp_path / "hang"
    (tree / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", tree / "bin/busybox")
    (tree / "init").write_text("#!/bin/busybox sh\nwhile :; do /bin/busybox sleep 5; done\n")
    (tree / "init").chmod(0o755)
    initrd = tmp_path / "hang.img"
    with gzip.open(initrd, "wb") as out:
        archive_tree(tree, out, 0)
    return initrd


def test_expect_that_never_appears_fails_on_timeout_with_the_console_tail(boot_cache, tmp_path):
    initrd = hanging_initrd(tmp_path)
    # A cache with the package lists but not the kernel: the download is shown, not silent.
    DebianArchive(host_arch(), boot_cache).kernel_package(Runner())
    fresh = tmp_path / "cache"
    shutil.copytree(boot_cache / "apt", fresh / "apt")
    began = time.monotonic()
    result = run_cli("boot", initrd, "--kernel", "debian", "--cache-dir", fresh, "--accel", "tcg",
                     "--expect", "THIS-NEVER-APPEARS", "--timeout", "4")
    elapsed = time.monotonic() - began - _download_seconds(result.stderr)
    progress = r"^osbuilder: Downloading linux-image-\S+ for amd64 \(\d+ MiB, once per cache\)\.\.\.$"
    assert re.search(progress, result.stderr, re.M), result.stderr
    assert result.returncode == 1
    assert "boot failed (timeout): 'THIS-NEVER-APPEARS' did not appear within 4 s" in result.stderr
    tail = result.stderr.split("--- console tail ---\n", 1)[1]
    assert re.search(r"^\[\s*\d+\.\d+\] ", tail, re.M)  # the kernel's own lines, as far as it got
    assert elapsed < 4 + 25  # harness start-up and the kill grace, never the guest's own pace


def test_a_guest_that_powers_off_without_the_line_fails_at_once(rootfs, boot_cache, tmp_path):
    initrd = pack("initrd", probe_tree(rootfs, "agent"), tmp_path / "initrd.img")
    result, report = boot(initrd, boot_cache, "--expect", "NOT-THE-PROBE-LINE", timeout=200)
    assert result.returncode == 1 and report["outcome"] == "powered-off"
    assert report["boot_seconds"] < 100
    assert "OSBUILDER-PROBE pid=1" in report["console_tail"]  # it printed, then powered off


def test_a_kernel_panic_is_reported_as_one(rootfs, boot_cache, tmp_path):
    initrd = pack("initrd", probe_tree(rootfs, "agent"), tmp_path / "initrd.img")
    result, report = boot(initrd, boot_cache, "--append", "rdinit=/no/such/init", timeout=200)
    assert result.returncode == 1 and report["outcome"] == "panic"
    assert report["reason"].startswith("Kernel panic - not syncing")
    assert report["boot_seconds"] < 100


def test_human_output_reports_the_boot_time(rootfs, boot_cache, tmp_path):
    initrd = pack("initrd", probe_tree(rootfs, "agent"), tmp_path / "initrd.img")
    result = run_cli("boot", initrd, "--kernel", "debian", "--cache-dir", boot_cache, "--accel", "tcg")
    assert result.returncode == 0, result.stderr
    assert re.match(r"boot: OK in \d+\.\d s \(tcg, PVH vmlinux\)\nprobe: pid=1 init_mode=true ", result.stdout)


def test_kernel_modules_resolve_to_the_set_reference_section_10_measured_in_a_loadable_order(boot_cache, tmp_path):
    from osbuilder.foundation.arch import get_arch
    from osbuilder.boot.debian_archive import DebianArchive
    from osbuilder.boot.kernel import kernel_from_deb
    from osbuilder.boot.modules import DEVICE_MODULES, ModuleIndex, module_name
    from osbuilder.pack.fs import FILESYSTEMS
    from osbuilder.foundation.runner import Runner

    deb = DebianArchive(get_arch("x86_64"), boot_cache).kernel_package(Runner())
    _, modules = kernel_from_deb(deb, boot_cache, Runner())
    index = ModuleIndex.load(modules, tmp_path, Runner())
    def assert_loadable(order: list[str]) -> None:
        """Every module after its dependencies, and crc32c (ext4's soft dependency) first."""
        for position, name in enumerate(order):
            assert set(index.deps[name]) <= set(order[:position]), (name, order)
        if "ext4" in order:
            assert order.index("crc32c_generic") < order.index("jbd2")

    order = [module_name(p) for p in index.resolve(DEVICE_MODULES["virtio-blk"] + (FILESYSTEMS["ext4"].kernel_module,))]
    # The set docs/kata-contract.md, measured facts measured; independent modules may come in either order.
    assert sorted(order) == sorted(["virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
                                    "virtio_pci", "virtio_blk", "crc32c_generic", "jbd2", "mbcache", "crc16",
                                    "ext4"])
    assert_loadable(order)
    nvdimm = [module_name(p) for p in index.resolve(DEVICE_MODULES["nvdimm"])]
    assert sorted(nvdimm) == ["libnvdimm", "nd_btt", "nd_pmem", "nfit"]
    assert_loadable(nvdimm)


# -- aarch64 ------------------------------------------------------------------------------
def test_aarch64_initrd_and_virtio_blk_image_boot_under_qemu_system_aarch64(rootfs, boot_cache, tmp_path):
    tree = probe_tree(rootfs, "agent", "aarch64")
    initrd = pack("initrd", tree, tmp_path / "initrd.img")
    result, report = boot(initrd, boot_cache, "--host-cgroup-driver", "systemd")
    assert_probe(result, report, tree, "systemd", arch="aarch64")
    assert report["command"][0] == "qemu-system-aarch64"
    image = pack("image", tree, tmp_path / "plain.img", "--no-dax")
    result, report = boot(image, boot_cache, "--host-cgroup-driver", "cgroupfs")
    assert_probe(result, report, tree, "cgroupfs", arch="aarch64")
    assert report["device"] == "virtio-blk"


# -- ppc64le and s390x --------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["ppc64le", "s390x"])
def test_pseries_and_s390_ccw_machines_boot_a_probe_initrd(boot_cache, tmp_path, arch):
    """A small busybox guest, not a Debian rootfs: bootstrapping these arches through
    qemu-user takes minutes, and the rootfs tests cover that path; this proves the machine
    table (pseries/hvc0, s390-ccw-virtio/ttysclp0) with Debian's own kernels."""
    from osbuilder.foundation.arch import get_arch
    from osbuilder.boot.shim import busybox_for
    from osbuilder.foundation.runner import Runner
    from tests.helpers import make_busybox_probe_guest

    # The boot shim's own source of busybox: Debian's busybox-static for the arch.
    busybox = busybox_for(get_arch(arch), boot_cache, Runner())
    tree = make_busybox_probe_guest(tmp_path / "tree", arch, busybox)
    initrd = pack("initrd", tree, tmp_path / "initrd.img")
    result, report = boot(initrd, boot_cache, "--host-cgroup-driver", "systemd")
    assert_probe(result, report, tree, "systemd", arch=arch)
    assert report["command"][0] == {"ppc64le": "qemu-system-ppc64", "s390x": "qemu-system-s390x"}[arch]



# -- init mode launcher -------------------------------------------------------------------
@pytest.mark.parametrize("host_driver", ["cgroupfs", "systemd"])
def test_a_launcher_guest_follows_the_host_and_fails_with_systemd(boot_cache, tmp_path, host_driver):
    """The probe started by a launcher is not PID 1 and finds no systemd: it follows the host's
    driver, which works with cgroupfs and fails (the probe's error line) with systemd."""
    from tests.helpers import make_busybox_probe_guest
    from tests.unit.test_launcher import launcher_file

    tree = make_busybox_probe_guest(tmp_path / "tree", "x86_64", Path("/bin/busybox"), init="launcher",
                                    launcher=launcher_file(tmp_path))
    initrd = pack("initrd", tree, tmp_path / "initrd.img")
    result, report = boot(initrd, boot_cache, "--host-cgroup-driver", host_driver)
    assert report["recorded_init_mode"] == "launcher"
    if host_driver == "cgroupfs":
        assert result.returncode == 0, result.stderr
        probe = report["probe"]
        assert (probe["init_mode"], probe["systemd"], probe["cgroup_driver"]) == (False, False, "cgroupfs")
        assert probe["pid"] != 1 and probe["host_cgroup_driver"] == "cgroupfs"
    else:
        assert result.returncode == 1 and report["outcome"] == "probe-error"
        assert "systemd is not PID 1" in report["reason"]


# -- Debian guests for ppc64le and s390x ----------------------------------------------------
def test_debian_agent_mode_guests_for_ppc64le_and_s390x_boot(rootfs, boot_cache, tmp_path):
    """A real Debian rootfs bootstrapped for each arch through qemu-user binfmt on this x86_64
    host, packed as an initrd and booted under its qemu-system with Debian's kernel. The two
    arches run side by side: each is one emulated CPU's work, and the machine has two."""
    from concurrent.futures import ThreadPoolExecutor

    def build_and_boot(arch: str):
        tree = probe_tree(rootfs, "agent", arch)
        initrd = pack("initrd", tree, tmp_path / f"initrd-{arch}.img")
        return tree, *boot(initrd, boot_cache, "--host-cgroup-driver", "systemd", timeout=240)

    arches = ["ppc64le", "s390x"]
    with ThreadPoolExecutor(max_workers=len(arches)) as pool:
        outcomes = dict(zip(arches, pool.map(build_and_boot, arches)))
    for arch, (tree, result, report) in outcomes.items():
        assert_probe(result, report, tree, "systemd", arch=arch)


def test_auto_accel_falls_back_to_tcg_when_kvm_shows_no_progress(tmp_path: Path):
    """The real probe: qemu with KVM on something that is no kernel prints no banner."""
    import time

    from osbuilder.boot.kernel import Kernel
    from osbuilder.boot.session import probe_kvm
    from osbuilder.foundation.arch import host_arch
    from osbuilder.foundation.runner import Runner

    junk = tmp_path / "vmlinuz"
    junk.write_bytes(b"not a kernel at all")
    began = time.monotonic()
    assert probe_kvm(host_arch(), Kernel(image=junk, arch=host_arch(), modules=None, pvh=False), Runner()) is False
    assert time.monotonic() - began < 8 + 15


def test_the_kvm_probe_s_verdict_is_remembered_per_kernel_and_host(tmp_path: Path, caplog):
    """On this host /dev/kvm cannot boot a kernel: the probe's seconds are paid once per kernel
    and host; the verdict kept in the cache answers the next boot, and another kernel asks again."""
    import logging
    import os

    from osbuilder.boot.kernel import Kernel
    from osbuilder.boot.session import KVM_VERDICTS, kvm_verdict_key, remembered_kvm_probe
    from osbuilder.foundation.arch import host_arch
    from osbuilder.foundation.runner import Runner

    kernels = []
    for name in ("one", "two"):
        junk = tmp_path / f"vmlinuz-{name}"
        junk.write_bytes(f"not a kernel at all ({name})".encode())
        kernels.append(Kernel(image=junk, arch=host_arch(), modules=None, pvh=False))
    cache = tmp_path / "cache"
    assert remembered_kvm_probe(host_arch(), kernels[0], Runner(), cache) is False
    [verdict] = (cache / KVM_VERDICTS).iterdir()
    recorded = json.loads(verdict.read_text())
    assert recorded == {"key": kvm_verdict_key(kernels[0].image), "kvm": False}
    assert recorded["key"]["host_kernel"] == os.uname().release and recorded["key"]["kernel_sha256"]
    caplog.set_level(logging.INFO, logger="osbuilder")
    caplog.clear()
    assert remembered_kvm_probe(host_arch(), kernels[0], Runner(), cache) is False
    assert "KVM probe: remembered" in caplog.text and "$ qemu-system" not in caplog.text  # no qemu started
    caplog.clear()
    assert kvm_verdict_key(kernels[1].image) != kvm_verdict_key(kernels[0].image)
    assert remembered_kvm_probe(host_arch(), kernels[1], Runner(), cache) is False
    assert "$ qemu-system" in caplog.text and "remembered" not in caplog.text
    assert len(list((cache / KVM_VERDICTS).iterdir())) == 2
