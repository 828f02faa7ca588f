"""The cgroup drivers a host's container manager asks for, and what a guest records when
its agent follows the host (docs/kata-contract.md, the cgroup-driver rule). Comparisons name these constants, never
the words, so a driver is never mistaken for the init mode of the same name."""

from __future__ import annotations

SYSTEMD_DRIVER = "systemd"
CGROUPFS_DRIVER = "cgroupfs"
HOST_CGROUP_DRIVERS = (SYSTEMD_DRIVER, CGROUPFS_DRIVER)
# What an image records when its agent follows whatever the host asks.
FOLLOWS_HOST = "host"
