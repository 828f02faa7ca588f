"""The host's side of a deployment, read from its configuration files: the Kata runtime's
hypervisor sections, the container manager's cgroup driver (containerd, CRI-O, kubelet),
and the guest kernel's .config. A file that is missing or does not parse is the user's to
fix: one line naming the file and, where the parser knows it, the line."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osbuilder.foundation.cgroups import CGROUPFS_DRIVER, HOST_CGROUP_DRIVERS, SYSTEMD_DRIVER
from osbuilder.foundation.documents import check_shape, quoted, read_regular
from osbuilder.foundation.yaml_documents import load_yaml_document
from osbuilder.foundation.errors import UserError
from osbuilder.pack.registry import runtime_slot_keys

KATA_RUNTIME_TYPE = "io.containerd.kata.v2"
# containerd 1.x and 2.x keep the CRI runtimes under different plugin names.
CONTAINERD_CRI_PLUGINS = ("io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime")


HOST_CONFIG_LIMIT = 4 << 20  # Kata's configuration.toml is ~30 KB, a kernel .config ~300 KB
STRING = str
TABLE = dict
# What the hypervisor keys osbuilder reads must be; other keys are Kata's business.
HYPERVISOR_SHAPE = {"image": STRING, "initrd": STRING, "kernel": STRING, "rootfs_type": STRING,
                    "kernel_params": STRING, "machine_type": STRING, "disable_image_nvdimm": bool,
                    "guest_extension_images": [{"name": STRING, "path": STRING, "verity_params": STRING}]}


def _read(path: Path, what: str) -> str:
    data = read_regular(Path(path), what, HOST_CONFIG_LIMIT)
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} '{path}' is not UTF-8 text (byte {exc.start})", "pass the text file") from None


def load_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        return tomllib.loads(_read(path, what))
    except tomllib.TOMLDecodeError as exc:  # its message ends "(at line N, column M)"
        raise UserError(f"{what} {path}: not valid TOML: {exc}", "fix the file") from None
    except RecursionError:
        raise UserError(f"{what} {path}: nested too deeply to read", "fix the file") from None


def load_yaml(path: Path, what: str) -> dict[str, Any]:
    data = load_yaml_document(_read(path, what), f"{what} {path}", "fix the file")
    if not isinstance(data, dict):
        raise UserError(f"{what} {path}: not a YAML mapping", "pass the kubelet's KubeletConfiguration file")
    return data


@dataclass(frozen=True)
class HypervisorSection:
    """One `[hypervisor.<name>]` table of Kata's configuration.toml. Which keys name an
    artifact, and which settings must match it, the packers say."""

    name: str
    table: dict[str, Any]

    def value(self, key: str, default: Any = None) -> Any:
        """A setting, or Kata's default when the table leaves it out (or empty)."""
        found = self.table.get(key)
        return default if found is None or found == "" else found

    @property
    def slot(self) -> str | None:
        """The first key that names an artifact (Kata prefers the image to the initrd)."""
        return next((key for key in runtime_slot_keys() if self.table.get(key)), None)

    @property
    def artifact(self) -> str | None:
        return self.table[self.slot] if self.slot else None

    @property
    def kernel(self) -> str | None:
        return self.value("kernel")

    @property
    def extension_images(self) -> list[dict[str, Any]]:
        """The [[hypervisor.<name>.guest_extension_images]] tables (docs/kata-contract.md, composable guests)."""
        tables = self.table.get("guest_extension_images") or []
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            raise UserError(f"[hypervisor.{self.name}] guest_extension_images is not a list of tables",
                            "write each as [[hypervisor.<name>.guest_extension_images]] with name, path, "
                            "verity_params")
        return tables


def runtime_sections(path: Path) -> list[HypervisorSection]:
    data = load_toml(path, "runtime config")
    hypervisors = data.get("hypervisor")
    if not isinstance(hypervisors, dict) or not hypervisors:
        raise UserError(f"runtime config {path} has no [hypervisor.<name>] section",
                        "pass Kata's configuration.toml (or a drop-in with a hypervisor section)")
    sections = []
    for name, table in hypervisors.items():
        if not isinstance(table, dict):
            continue
        check_shape(table, HYPERVISOR_SHAPE, f"runtime config {path}", "write it as Kata's configuration.toml does "
                    '(image = "/path", disable_image_nvdimm = false)', f"[hypervisor.{name}]")
        sections.append(HypervisorSection(name=name, table=table))
    return sections


@dataclass(frozen=True)
class HostDriver:
    value: str  # "systemd" or "cgroupfs"
    source: str  # which setting decided, for the report


def _dig(data: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def containerd_driver(path: Path) -> HostDriver | None:
    """SystemdCgroup of the runtime handler that runs Kata, in either containerd layout."""
    data = load_toml(path, "containerd config")
    for plugin in CONTAINERD_CRI_PLUGINS:
        runtimes = _dig(data, "plugins", plugin, "containerd", "runtimes") or {}
        check_shape({"runtimes": runtimes}, {"runtimes": TABLE}, f"containerd config {path}",
                    "write each runtime as a table of its own", f'[plugins."{plugin}".containerd]')
        for handler, table in runtimes.items():
            check_shape(table, {"runtime_type": STRING, "options": {"SystemdCgroup": bool}},
                        f"containerd config {path}", "write SystemdCgroup = true or false",
                        f'[plugins."{plugin}".containerd.runtimes.{handler}]')
            if isinstance(table, dict) and table.get("runtime_type") == KATA_RUNTIME_TYPE:
                systemd = _dig(table, "options", "SystemdCgroup")
                return HostDriver(SYSTEMD_DRIVER if systemd is True else CGROUPFS_DRIVER,
                                  f'{path}: [plugins."{plugin}".containerd.runtimes.{handler}.options] '
                                  f"SystemdCgroup = {str(bool(systemd)).lower()}")
    return None


def _driver_setting(path: Path, what: str, setting: str, value: Any, default: str) -> HostDriver:
    """A driver named by one setting: unset means the manager's default."""
    if value is None:
        return HostDriver(default, f"{path}: {setting} unset ({what}'s default, {default})")
    if not isinstance(value, str) or value not in HOST_CGROUP_DRIVERS:
        raise UserError(f"{what} config {path}: {setting} {quoted(value)} is neither systemd nor cgroupfs",
                        f"fix {setting}")
    return HostDriver(value, f"{path}: {setting} = {value}")


def crio_driver(path: Path) -> HostDriver | None:
    manager = _dig(load_toml(path, "CRI-O config"), "crio", "runtime", "cgroup_manager")
    return _driver_setting(path, "CRI-O", "[crio.runtime] cgroup_manager", manager, SYSTEMD_DRIVER)


def kubelet_driver(path: Path) -> HostDriver | None:
    driver = load_yaml(path, "kubelet config").get("cgroupDriver")
    return _driver_setting(path, "kubelet", "cgroupDriver", driver, CGROUPFS_DRIVER)


@dataclass(frozen=True)
class HostDrivers:
    """Every source that names the host's driver, in the order they are asked: the flag, the
    containerd handler that runs Kata, CRI-O, the kubelet."""

    found: tuple[HostDriver, ...]

    @property
    def decided(self) -> HostDriver | None:
        """The driver the comparisons use: the first source's (None: no source says)."""
        return self.found[0] if self.found else None

    @property
    def conflict(self) -> bool:
        return len({driver.value for driver in self.found}) > 1


def host_cgroup_drivers(flag: str | None, containerd: Path | None, crio: Path | None,
                        kubelet: Path | None) -> HostDrivers:
    """What each given source says of the host's driver."""
    found = [HostDriver(flag, "--host-cgroup-driver")] if flag else []
    for path, read in ((containerd, containerd_driver), (crio, crio_driver), (kubelet, kubelet_driver)):
        if path is not None:
            driver = read(path)
            if driver is not None:
                found.append(driver)
    return HostDrivers(tuple(found))


def kernel_config(path: Path) -> dict[str, str]:
    """A kernel .config: CONFIG_X -> its value ("y", "m", a string); unset options absent."""
    options = {}
    for number, line in enumerate(_read(path, "kernel config").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"(CONFIG_\w+)=(.*)", line)
        if match is None:
            raise UserError(f"kernel config {path} line {number}: not CONFIG_NAME=value", "pass a kernel .config")
        options[match.group(1)] = match.group(2).strip('"')
    return options
