from osbuilder.foundation.runner import Runner
from osbuilder.rootfs.provision import _chrony_service_changes
from osbuilder.rootfs.initmode import get_init_mode
from osbuilder.rootfs.summary import Summary, parse_summary
from osbuilder.foundation.templates import Templates


def make_summary(init_mode: str, epoch: int | None = 1700000000) -> Summary:
    return Summary(architecture="x86_64", distro="debian", release="bookworm",
                   default_packages=("dbus", "chrony", "dbus"), extra_packages=(),
                   init_mode=init_mode, agent_url="file:kata-agent", agent_version="3.2.0",
                   agent_sha256="ab" * 32, creation_epoch=epoch)


def test_cgroup_driver_follows_the_agent_rule():
    assert get_init_mode("agent").cgroup_driver == "cgroupfs"
    assert get_init_mode("systemd").cgroup_driver == "host"


def test_summary_round_trips_with_upstream_fields():
    data = parse_summary(make_summary("agent").render(Templates()))
    assert data["file-format-version"] == "0.0.2"
    assert data["rootfs-creation-time"] == "2023-11-14T22:13:20Z"
    assert data["base-distro"]["packages"] == {"default": ["chrony", "dbus"], "extra": [], "installed": []}
    agent = data["agent"]
    assert agent["agent-is-init-daemon"] == "yes" and agent["init-mode"] == "agent"
    assert agent["cgroup-driver"] == "cgroupfs" and agent["version"] == "3.2.0"
    assert agent["sha256"] == "ab" * 32
    systemd = parse_summary(make_summary("systemd").render(Templates()))["agent"]
    assert systemd["agent-is-init-daemon"] == "no" and systemd["cgroup-driver"] == "host"


def test_agent_unit_has_the_reference_settings():
    text = Templates().render("kata-agent.service.j2", agent_path="/usr/bin/kata-agent")
    for line in ("Description=Kata Containers Agent", "Wants=kata-containers.target", "StandardOutput=tty",
                 "Type=simple", "ExecStart=/usr/bin/kata-agent", "LimitNOFILE=1073741824",
                 "ExecStop=/bin/sync ; /usr/bin/systemctl --force poweroff", "FailureAction=poweroff",
                 "OOMScoreAdjust=-997"):
        assert line in text.splitlines()


def test_target_has_the_reference_settings():
    lines = Templates().render("kata-containers.target.j2").splitlines()
    for line in ("Requires=basic.target", "Requires=tmp.mount", "Wants=chronyd.service",
                 "Requires=kata-agent.service", "Conflicts=rescue.service rescue.target",
                 "After=basic.target rescue.service rescue.target", "AllowIsolate=yes"):
        assert line in lines


def test_chrony_service_changes():
    unit = ("[Service]\nExecStart=/usr/sbin/chronyd -u _chrony -F 1\nReadWritePaths=/run /var/lib/chrony\n"
            "StateDirectory=chrony\n")
    exec_start, paths = _chrony_service_changes(unit)
    assert exec_start == "/usr/sbin/chronyd -F 1"
    assert paths == ["/run", "-/var/lib/chrony"]
    rendered = Templates().render("chrony.service.override.conf.j2", exec_start=exec_start, read_write_paths=paths)
    assert "ConditionPathExists=/dev/ptp0" in rendered and "StateDirectory=\n" in rendered


def test_installed_packages_round_trip_through_the_summary():
    import dataclasses

    from osbuilder.rootfs.backends import Package
    from osbuilder.rootfs.summary import installed_packages

    summary = dataclasses.replace(make_summary("agent"), installed=(Package("dbus", "1.14.10-1~deb12u1", "amd64"),
                                                                   Package("libc6", "2.36-9+deb12u4", "amd64")))
    data = parse_summary(summary.render(Templates()))
    assert installed_packages(data) == [{"name": "dbus", "version": "1.14.10-1~deb12u1", "architecture": "amd64"},
                                        {"name": "libc6", "version": "2.36-9+deb12u4", "architecture": "amd64"}]
    assert installed_packages({"base-distro": {"packages": {"default": []}}}) is None  # upstream's summary


def test_apt_reads_the_dpkg_database(tmp_path):
    from osbuilder.foundation.fsutil import GuestRoot
    from osbuilder.rootfs.backends import Package, get_backend

    status = tmp_path / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_text("Package: zlib1g\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:1.2.13\n\n"
                      "Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n\n"
                      "Package: base-files\nStatus: install ok installed\nArchitecture: amd64\n"
                      "Description: multi\n line\nVersion: 12.4\n")
    assert get_backend("apt").installed_packages(GuestRoot(tmp_path), Runner(), None) == (
        Package("base-files", "12.4", "amd64"), Package("zlib1g", "1:1.2.13", "amd64"))
