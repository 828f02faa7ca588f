"""Benchmark: osbuilder's disk images against upstream Kata's image_builder.sh method.

Upstream (re-enacted here step by step, as root): size by trial (create a disk, parted,
losetup, mkfs, mount, read `df`, +10 MB per try until the tree fits), add free space,
round to 128 MiB, then create the disk, parted, losetup, mkfs.ext4, mount, `cp -a`,
umount, fsck, and write the DAX header. This machine has no udev, so partitions are
attached with `losetup --offset/--sizelimit` instead of `losetup -P`: the same work.

Usage: python benchmarks/image.py [--rounds N] [--workdir DIR]   (as root: loop devices)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import debian_systemd_rootfs, du_bytes, median  # noqa: E402

from osbuilder.pack.disk import MiB, pfn_info_block  # noqa: E402

DAX_START = 3 * MiB


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def create_disk(image: Path, size_mb: int) -> None:
    image.unlink(missing_ok=True)
    sh("truncate", "-s", f"{size_mb}M", str(image))
    sh("parted", "-s", "-a", "optimal", str(image), "mklabel", "msdos", "mkpart", "primary", "ext4",
       f"{DAX_START // MiB}MiB", "100%")


def attach_partition(image: Path) -> str:
    size = image.stat().st_size - DAX_START
    return sh("losetup", "-f", "--show", "--offset", str(DAX_START), "--sizelimit", str(size), str(image)).strip()


def upstream_ext4(tree: Path, image: Path, work: Path) -> None:
    rootfs_mb = int(sh("du", "-B", "1MB", "-s", str(tree)).split()[0])
    mount_dir = work / "mnt"
    mount_dir.mkdir(exist_ok=True)
    trial = work / "trial.img"
    for attempt in range(1, 21):  # calculate_required_disk_size: +10 MB per try
        size_mb = rootfs_mb + attempt * 10
        create_disk(trial, size_mb)
        device = attach_partition(trial)
        try:
            sh("mkfs.ext4", "-q", "-F", "-b", "4096", device)
            sh("mount", device, str(mount_dir))
            avail = int(sh("df", "-BM", "--output=avail", str(mount_dir)).splitlines()[-1].strip().rstrip("M"))
            sh("umount", str(mount_dir))
        finally:
            sh("losetup", "-d", device)
        if avail > rootfs_mb:
            break
    trial.unlink()
    size_mb = -(-size_mb // 128) * 128  # IMAGE_SIZE_ALIGNMENT_MB
    create_disk(image, size_mb)
    device = attach_partition(image)
    try:
        sh("mkfs.ext4", "-q", "-F", "-b", "4096", device)
        sh("mount", device, str(mount_dir))
        try:
            sh("cp", "-a", f"{tree}/.", str(mount_dir))
        finally:
            sh("umount", str(mount_dir))
        sh("e2fsck", "-fn", device)
    finally:
        sh("losetup", "-d", device)
    # set_dax_header: the pfn block at 4 KiB and a copy of the MBR, shifted, at 2 MiB.
    with open(image, "r+b") as f:
        f.seek(4096)
        f.write(pfn_info_block())
        mbr = bytearray(f.seek(0) or f.read(512))
        start = int.from_bytes(mbr[454:458], "little") - 2048
        mbr[454:458] = start.to_bytes(4, "little")
        f.seek(2 * MiB)
        f.write(mbr)


def osbuilder_image(tree: Path, image: Path, *extra: str) -> None:
    subprocess.run([sys.executable, "-m", "osbuilder", "-q", "image", str(tree), "--force", "-o", str(image), *extra],
                   check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="osbuilder-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    tree = debian_systemd_rootfs(workdir)
    tree_bytes = du_bytes(tree)
    print(f"tree: {tree} ({tree_bytes / MiB:.0f} MiB on disk, du -s)")

    runs = {
        "upstream ext4+DAX": lambda out: upstream_ext4(tree, out, workdir),
        "osbuilder ext4+DAX": lambda out: osbuilder_image(tree, out),
        "osbuilder ext4 --no-dax": lambda out: osbuilder_image(tree, out, "--no-dax"),
        "osbuilder erofs+DAX": lambda out: osbuilder_image(tree, out, "--fs", "erofs"),
        "osbuilder erofs --no-dax": lambda out: osbuilder_image(tree, out, "--fs", "erofs", "--no-dax"),
        "osbuilder xfs+DAX": lambda out: osbuilder_image(tree, out, "--fs", "xfs"),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    sizes: dict[str, int] = {}
    for _ in range(args.rounds):
        for name, run in runs.items():
            out = workdir / (name.replace(" ", "_").replace("+", "_") + ".img")
            start = time.monotonic()
            run(out)
            times[name].append(time.monotonic() - start)
            sizes[name] = out.stat().st_size
    base = "upstream ext4+DAX"
    print(f"{'method':<26}{'time s':>8}{'size MiB':>10}{'time ×':>9}{'size × upstream':>17}{'size × tree':>13}")
    for name in runs:
        t = median(times[name])
        print(f"{name:<26}{t:>8.2f}{sizes[name] / MiB:>10.0f}{t / median(times[base]):>9.3f}"
              f"{sizes[name] / sizes[base]:>17.3f}{sizes[name] / tree_bytes:>13.3f}")
    shutil.rmtree(workdir / "mnt", ignore_errors=True)


if __name__ == "__main__":
    main()
