"""The rootfs stage: bootstrap a tree from packages, provision it for an init mode, validate it."""
