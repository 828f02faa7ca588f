"""Benchmark: osbuilder's disk images against upstream Kata's image_builder.sh method.

Upstream (Kata's image_builder.sh, re-enacted step by step, as root): size by trial
(create a disk, parted, losetup, mkfs.ext4 + tune2fs, mount, read `df`, +10 MB per try
until the tree fits), add the header reserve, round to 128 MiB; then create the disk,
parted, losetup, mkfs.ext4 + tune2fs, mount, `cp -a`, sync, setup_systemd's `find`
sweeps and machine-id, umount, `fsck.ext4 -D -y`; then set_dax_header: a header disk
with the pfn block, its first 2 MiB plus the whole image appended with dd, sync. This
machine has no udev, so partitions are attached with `losetup --offset/--sizelimit`
instead of `losetup -P` + partprobe: the same work.

Usage: python benchmarks/image.py [--rounds N] [--workdir DIR]   (as root: loop devices)
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import command_seconds, du_bytes, run_rounds, setup  # noqa: E402

from osbuilder.pack.disk import MiB, pfn_info_block  # noqa: E402

DAX_START = 3 * MiB


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


# The unit and file names upstream's setup_systemd deletes with one `find` each.
TRIMMED = ("systemd-coredump@", "systemd-journald", "systemd-journald-dev-log", "systemd-journal-flush",
           "systemd-random-seed", "systemd-timesyncd", "systemd-tmpfiles-setup", "systemd-udevd",
           "systemd-udevd-control", "systemd-udevd-kernel", "systemd-udev-trigger", "systemd-update-utmp")
TRIMMED_FILES = ("systemd-bless-boot-generator", "systemd-fstab-generator", "systemd-getty-generator",
                 "systemd-gpt-auto-generator", "systemd-tmpfiles-cleanup.timer")


def create_disk(image: Path, size_mb: int, start_mb: int) -> None:
    image.unlink(missing_ok=True)
    sh("truncate", "-s", f"{size_mb}M", str(image))
    sh("parted", "-s", "-a", "optimal", str(image), "--", "mklabel", "msdos", "mkpart", "primary", "ext4",
       f"{start_mb}M", "-1M")


def attach_partition(image: Path, start_mb: int) -> str:
    start = sh("parted", "-s", str(image), "unit", "B", "print").split("\n")
    first = next(line for line in start if line.strip().startswith("1 "))
    offset, end = (int(x.rstrip("B")) for x in first.split()[1:3])
    return sh("losetup", "-f", "--show", "--offset", str(offset), "--sizelimit", str(end - offset + 1),
              str(image)).strip()


def format_loop(device: str) -> None:
    sh("mkfs.ext4", "-q", "-F", "-b", "4096", device)
    sh("tune2fs", "-m", "3", device)


def upstream_ext4(tree: Path, image: Path, work: Path) -> None:
    rootfs_mb = int(sh("du", "-B", "1MB", "-s", str(tree)).split()[0])
    mount_dir = work / "mnt"
    mount_dir.mkdir(exist_ok=True)
    trial = work / "trial.img"
    for attempt in range(1, 21):  # calculate_required_disk_size: +10 MB per try
        disk_mb = rootfs_mb + attempt * 10
        create_disk(trial, disk_mb, 1)
        device = attach_partition(trial, 1)
        try:
            format_loop(device)
            sh("mount", device, str(mount_dir))
            avail = int(sh("df", "-BM", "--output=avail", str(mount_dir)).splitlines()[-1].strip().rstrip("M"))
            sh("umount", str(mount_dir))
        finally:
            sh("losetup", "-d", device)
        if avail > rootfs_mb:
            break
    trial.unlink()
    img_mb = -(-(disk_mb + 2) // 128) * 128  # + MBR/DAX reserve, then IMAGE_SIZE_ALIGNMENT_MB
    # create_rootfs_image: the filesystem image, partition at 1 MiB, 2 MiB smaller.
    create_disk(image, img_mb - 2, 1)
    device = attach_partition(image, 1)
    try:
        format_loop(device)
        sh("mount", device, str(mount_dir))
        try:
            subprocess.run(f"cp -a {tree}/* {mount_dir}", shell=True, check=True)
            sh("sync")
            for unit in TRIMMED:  # setup_systemd
                subprocess.run(["find", str(mount_dir), "-type", "f", "(", "-name", f"{unit}.service", "-o",
                                "-name", f"{unit}.socket", ")", "-exec", "rm", "-f", "{}", ";"], check=True)
            for name in TRIMMED_FILES:
                subprocess.run(["find", str(mount_dir), "-type", "f", "-name", name, "-exec", "rm", "-f", "{}", ";"],
                               check=True)
            (mount_dir / "etc/machine-id").touch()
        finally:
            sh("umount", str(mount_dir))
        subprocess.run(["fsck.ext4", "-D", "-y", device], check=True, capture_output=True)
    finally:
        sh("losetup", "-d", device)
    # set_dax_header: a header disk with the partition at 3 MiB and the pfn block, whose first
    # 2 MiB are followed by the whole filesystem image, appended with dd.
    header = work / "header.img"
    dax = work / "dax.img"
    create_disk(header, img_mb, 3)
    with open(header, "r+b") as f:
        f.seek(4096)
        f.write(pfn_info_block())
    sh("sync")
    dax.unlink(missing_ok=True)
    sh("dd", f"if={header}", f"of={dax}", "bs=2M", "count=1", "status=none")
    sh("dd", f"if={image}", f"of={dax}", "oflag=append", "conv=notrunc", "bs=1M", "status=none")
    os.replace(dax, image)
    sh("sync")
    header.unlink()


# The tools that do the filesystem work; the rest of a run is osbuilder's own overhead.
FS_TOOLS = ("mke2fs", "debugfs", "mkfs.erofs", "mkfs.xfs", "faketime")  # faketime runs mkfs.xfs (its clock)


def osbuilder_image(tree: Path, image: Path, *extra: str, tools: list[float] | None = None) -> None:
    """`osbuilder -v image`; the seconds its filesystem tools took are appended to `tools`
    (-v costs a line per command: a few dozen)."""
    proc = subprocess.run([sys.executable, "-m", "osbuilder", "-v", "image", str(tree), "--force", "-o", str(image),
                           *extra], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if tools is not None:
        seconds = command_seconds(proc.stderr)
        tools.append(sum(seconds.get(name, 0.0) for name in FS_TOOLS))


def main() -> None:
    args, workdir, tree = setup(__doc__)
    tree_bytes = du_bytes(tree)

    flags = {"osbuilder ext4+DAX": (), "osbuilder ext4 --no-dax": ("--no-dax",),
             "osbuilder erofs+DAX": ("--fs", "erofs"), "osbuilder erofs --no-dax": ("--fs", "erofs", "--no-dax"),
             "osbuilder xfs+DAX": ("--fs", "xfs")}
    tools: dict[str, list[float]] = {name: [] for name in flags}
    # The first image of the tree checks it and records it (foundation/verified.py), as the
    # rootfs command that wrote it would have: the rounds pack a tree already checked.
    osbuilder_image(tree, workdir / "first.img")
    runs = {"upstream ext4+DAX": lambda out: upstream_ext4(tree, out, workdir),
            **{name: (lambda out, extra=extra, name=name: osbuilder_image(tree, out, *extra, tools=tools[name]))
               for name, extra in flags.items()}}
    rounds = run_rounds(runs, args.rounds, workdir)
    base = "upstream ext4+DAX"
    # "size" is the file's length; "disk use" is what it occupies (the image is sparse where
    # the filesystem left blocks unwritten, as `du` counts the tree).
    print(f"tree: {tree_bytes / MiB:.0f} MiB (du -s)")
    print(f"{'method':<26}{'time s':>8}{'size MiB':>10}{'time ×':>9}{'size × upstream':>17}{'size × tree':>13}"
          f"{'disk use MiB':>14}{'disk use × tree':>17}")
    for name in runs:
        t, size, used = rounds.median_time(name), rounds.sizes[name], rounds.allocated[name]
        print(f"{name:<26}{t:>8.2f}{size / MiB:>10.0f}{t / rounds.median_time(base):>9.3f}"
              f"{size / rounds.sizes[base]:>17.3f}{size / tree_bytes:>13.3f}{used / MiB:>14.0f}{used / tree_bytes:>17.3f}")
    print(f"\n{'osbuilder overhead':<26}{'time s':>8}{'fs tools s':>12}{'overhead s':>12}   (medians; tools: "
          f"{', '.join(FS_TOOLS)})")
    for name in flags:
        total, spent = rounds.median_time(name), statistics.median(tools[name])
        print(f"{name:<26}{total:>8.2f}{spent:>12.2f}{total - spent:>12.2f}")
    shutil.rmtree(workdir / "mnt", ignore_errors=True)


if __name__ == "__main__":
    main()
