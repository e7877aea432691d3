"""`env doctor --fix` on a fresh host: packages first, then a fresh look (apt makes the kvm
group and may start daemons), then repairs and daemons for what is still missing."""

from __future__ import annotations

from providers import daemons, host
from providers.host import Check, HostReport


def test_repairs_follow_what_the_packages_changed(monkeypatch):
    calls = []
    monkeypatch.setattr("vbox_cli.proc.run", lambda argv, **kw: calls.append(("run", argv[0], argv[1])))
    monkeypatch.setattr(daemons, "start_daemon", lambda name: calls.append(("start", name)) or f"started {name}")
    monkeypatch.setattr(daemons, "ready", lambda name: False)
    repaired = []
    # before apt: no kvm group yet, so /dev/kvm is only a warning; libvirt is not installed
    before = HostReport([Check("/dev/kvm", "warn", "no kvm group on this host"),
                         Check("libvirt", "missing", "libvirtd not installed", packages=("libvirt-daemon-system",),
                               daemons=("libvirtd",))])
    # after apt: the kvm group exists and /dev/kvm needs its repair; libvirtd is still to start
    after = HostReport([Check("/dev/kvm", "missing", "mode 0o600", hint="set root:kvm 0660",
                              repair=lambda: repaired.append("kvm")),
                        Check("libvirt", "missing", "not running", daemons=("virtlogd", "libvirtd"))])
    final = HostReport([Check("/dev/kvm", "ok", "root:kvm"), Check("libvirt", "ok", "running")])
    reports = iter([after, final])
    result = daemons.fix(before, lambda text: calls.append(("say", text)), lambda: next(reports))
    assert result is final and repaired == ["kvm"]
    order = [c for c in calls if c[0] != "say"]
    assert order == [("run", "apt-get", "update"), ("run", "apt-get", "install"), ("start", "virtlogd"),
                     ("start", "libvirtd")]
    assert ("say", "fixing /dev/kvm: set root:kvm 0660") in calls


def test_a_running_daemon_is_not_started_again_and_a_repair_a_daemon_showed_is_done(monkeypatch):
    """libvirt's check names virtlogd and libvirtd: one that answers already is left alone
    (starting it again fails on its pid file). A repair that shows only once a daemon runs
    (libvirtd started before the system bus) is done in the same --fix."""
    started, repaired = [], []
    monkeypatch.setattr(daemons, "start_daemon", lambda name: started.append(name) or f"started {name}")
    monkeypatch.setattr(daemons, "ready", lambda name: name == "virtlogd")
    before = HostReport([Check("libvirt", "missing", "not running", daemons=("virtlogd", "libvirtd")),
                         Check("system bus", "missing", "no bus", daemons=("dbus",))])
    after = HostReport([Check("libvirt access (alice)", "missing", "no system bus connection",
                              hint="start libvirtd again", repair=lambda: repaired.append("libvirtd"))])
    final = HostReport([Check("libvirt access (alice)", "ok", "alice reaches qemu:///system")])
    reports = iter([after, final])
    said = []
    assert daemons.fix(before, said.append, lambda: next(reports)) is final
    assert started == ["dbus", "libvirtd"] and repaired == ["libvirtd"]
    assert "fixing libvirt access (alice): start libvirtd again" in said


def test_a_cgroup_mount_that_is_not_this_systems_own_is_said(tmp_path):
    """As in a nested container with the host's hierarchy bind-mounted: lxcfs could not
    find a machine's limits."""
    import os

    (tmp_path / "memory" / "lxc.payload.outer").mkdir(parents=True)
    (tmp_path / "memory" / "cgroup.procs").write_text("1\n2\n")
    (tmp_path / "memory" / "lxc.payload.outer" / "cgroup.procs").write_text(f"{os.getpid()}\n")
    mine = tmp_path / "self-cgroup"
    mine.write_text("4:memory:/\n1:name=systemd:/\n")  # a cgroup namespace: "/" is not the mount's root
    check = host.check_cgroup_view(str(tmp_path), str(mine))
    assert check.status == "warn" and "not this system's own" in check.detail
    mine.write_text("4:memory:/lxc.payload.outer\n")
    assert host.check_cgroup_view(str(tmp_path), str(mine)).status == "ok"


def _systemd_host(monkeypatch, tmp_path, status: str):
    """A host whose init is systemd: `systemctl` is a script of this test on PATH."""
    import os

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/calls\n"
                                       f"[ \"$1\" = status ] && cat <<'EOF'\n{status}\nEOF\nexit 0\n")
    (bin_dir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(daemons, "systemd_is_init", lambda: True)
    monkeypatch.setattr(daemons, "START_TIMEOUT", 0.3)


def test_a_unit_skipped_by_its_condition_is_explained_and_lxcfs_started_by_vbox(monkeypatch, tmp_path):
    import pytest

    from vbox_cli.errors import VboxError

    status = ("○ lxcfs.service - FUSE filesystem for LXC\n     Loaded: loaded\n     Active: inactive (dead)\n"
              "  Condition: start condition failed at Mon; 1s ago\n             └─ "
              "ConditionVirtualization=!container was not met")
    _systemd_host(monkeypatch, tmp_path, status)
    started = []
    answers = {"after vbox starts it": False}
    monkeypatch.setattr(daemons, "_start_directly", lambda name: started.append(name))
    monkeypatch.setattr(daemons, "ready", lambda name: bool(started) and answers["after vbox starts it"])
    with pytest.raises(VboxError) as info:  # systemd skipped it, and vbox's own start did not answer either
        daemons.start_daemon("lxcfs")
    assert "lxcfs did not start: Condition: start condition failed" in info.value.message
    assert "ConditionVirtualization=!container" in info.value.details and started == ["lxcfs"]
    started.clear()
    answers["after vbox starts it"] = True
    said = daemons.start_daemon("lxcfs")
    assert said.startswith("started lxcfs itself: its systemd unit did not run (Condition: start condition failed")
    assert "start lxcfs" in (tmp_path / "calls").read_text()


def test_a_unit_that_fails_is_explained_not_reported_as_started(monkeypatch, tmp_path):
    import pytest

    from vbox_cli.errors import VboxError

    _systemd_host(monkeypatch, tmp_path, "× virtlogd.service\n     Active: failed (Result: exit-code)")
    monkeypatch.setattr(daemons, "ready", lambda name: False)
    with pytest.raises(VboxError) as info:
        daemons.start_daemon("virtlogd")
    assert info.value.message.startswith("virtlogd did not start")
    assert "systemctl status virtlogd" in info.value.hint and "Result: exit-code" in info.value.details


def test_ansible_without_dev_shm_is_missing_and_mounts_a_tmpfs(monkeypatch):
    """A host that is a bare container may have no /dev/shm, without which Ansible cannot
    run ("Unable to use multiprocessing"): doctor says so and --fix mounts a tmpfs there."""
    import os

    calls = []
    monkeypatch.setattr("provisioners.ansible.playbook_command", lambda: "/usr/bin/ansible-playbook")
    monkeypatch.setattr(os.path, "isdir", lambda path: path != "/dev/shm")
    monkeypatch.setattr(os, "makedirs", lambda *a, **kw: calls.append(("mkdir", a[0])))
    monkeypatch.setattr("vbox_cli.proc.run", lambda argv, **kw: calls.append(tuple(argv)))
    check = host.check_ansible(needed=True)
    assert check.status == "missing" and "/dev/shm is missing" in check.detail
    check.repair()
    assert calls == [("mkdir", "/dev/shm"),
                     ("mount", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", "/dev/shm")]
    monkeypatch.undo()
    monkeypatch.setattr("provisioners.ansible.playbook_command", lambda: "/usr/bin/ansible-playbook")
    assert host.check_ansible(needed=True).status == "ok"  # this host has one


def test_a_pid_file_of_a_process_that_is_gone_is_removed_one_of_a_running_daemon_is_kept(tmp_path):
    """A host restored from a snapshot keeps /run/dbus/pid but not the daemon; dbus-daemon
    then refuses to start ("The pid file exists"). A pid that runs the program stays."""
    import os
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = tmp_path / "stale.pid"
    stale.write_text(f"{gone.pid}\n")
    assert daemons.clear_stale_pidfile(stale, "dbus-daemon") and not stale.exists()

    other = tmp_path / "other.pid"  # a live pid reused by another program is stale too
    other.write_text(f"{os.getpid()}\n")
    assert daemons.clear_stale_pidfile(other, "dbus-daemon") and not other.exists()

    live = tmp_path / "live.pid"  # this test's own process, by the name it runs under
    live.write_text(f"{os.getpid()}\n")
    me = open("/proc/self/comm").read().strip()
    assert not daemons.clear_stale_pidfile(live, me) and live.exists()

    garbage = tmp_path / "garbage.pid"
    garbage.write_text("not a pid")
    assert daemons.clear_stale_pidfile(garbage, "dbus-daemon") and not garbage.exists()
    assert not daemons.clear_stale_pidfile(tmp_path / "absent.pid", "dbus-daemon")
