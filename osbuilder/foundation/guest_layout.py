"""Where things live inside a guest: the one table of guest paths every stage uses."""

from __future__ import annotations

INIT_PATH = "/sbin/init"
AGENT_PATH = "/usr/bin/kata-agent"
SUMMARY_PATH = "/var/lib/osbuilder/osbuilder.yaml"
RESOLV_CONF = "/etc/resolv.conf"
HOSTNAME = "/etc/hostname"
MACHINE_ID = "/etc/machine-id"
SHELL = "/bin/sh"

UNIT_DIR = "/usr/lib/systemd/system"
ETC_UNIT_DIR = "/etc/systemd/system"
GENERATOR_DIR = "/usr/lib/systemd/system-generators"
# systemd's unit search path, highest priority first.
UNIT_SEARCH_PATH = (ETC_UNIT_DIR, "/run/systemd/system", UNIT_DIR, "/lib/systemd/system")
SYSTEMD_BINARIES = ("/usr/lib/systemd/systemd", "/lib/systemd/systemd")
# What an initrd's /init points at under systemd: the kernel copes badly with long link
# chains from /init, so it points straight at the binary.
SYSTEMD_BINARY = "/lib/systemd/systemd"

# chrony's configuration and unit: Debian's names first, then everyone else's.
CHRONY_CONFS = ("/etc/chrony/chrony.conf", "/etc/chrony.conf")
CHRONY_UNITS = ("chrony.service", "chronyd.service")

# Directories a sandbox guest never keeps; /var/tmp becomes a link to /tmp.
VOLATILE_VAR_DIRS = ("/var/cache", "/var/lib", "/var/log", "/var/tmp")
VAR_TMP = "/var/tmp"
VAR_TMP_TARGET = "../tmp"

MODULES_DIR = "/lib/modules"
PASSWD = "/etc/passwd"
FSTAB = "/etc/fstab"
