"""Fixing a host for `env doctor --fix`: the packages its checks name, their repairs, and
the daemons vbox needs (the system bus, virtlogd, libvirtd, lxcfs, Open vSwitch) started
through systemd where it is init, else as daemons of their own; and restarted."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from providers.host import LXCFS_MOUNT, OVS_CTL, HostReport, _socket_answers, check_lxcfs, systemd_is_init

DAEMON_ORDER = ("dbus", "virtlogd", "libvirtd", "lxcfs", "openvswitch")


def fix(report: HostReport, say: Callable[[str], None], recheck: Callable[[], HostReport]) -> HostReport:
    """Install the missing packages, then check again (packages change what is there: apt
    makes the kvm group, and a daemon's package may start it), then repair and start what
    is still missing. Returns the report after the repairs."""
    from vbox_cli import proc

    packages = sorted({p for c in report.checks if not c.ok for p in c.packages})
    if packages:
        say(f"installing {' '.join(packages)}")
        proc.run(["apt-get", "update", "-q"], timeout=600)
        proc.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
                 env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=1800)
        report = recheck()
    for check in report.checks:
        if not check.ok and check.repair is not None:
            say(f"fixing {check.name}: {check.hint}")
            check.repair()
    wanted = {d for c in report.checks if not c.ok for d in c.daemons}
    for daemon in DAEMON_ORDER:
        # a check may name a daemon that runs already (libvirt's names virtlogd and libvirtd):
        # starting it again fails on its pid file
        if daemon in wanted and not ready(daemon):
            say(start_daemon(daemon))
    report = recheck()
    for check in report.checks:  # what a started daemon showed (libvirtd started before the system bus)
        if not check.ok and check.repair is not None:
            say(f"fixing {check.name}: {check.hint}")
            check.repair()
            report = recheck()
    return report


SOCKETS = {"libvirtd": "/run/libvirt/libvirt-sock", "virtlogd": "/run/libvirt/virtlogd-sock",
           "dbus": "/run/dbus/system_bus_socket"}
LXCFS_LOG = "/var/log/vbox-lxcfs.log"
REAPER_LOG = "/var/log/vbox-reaper.log"  # what libvirtd's reaper (providers/reaper.py) or its start says
START_TIMEOUT = 15.0


def ready(name: str) -> bool:
    """Whether a daemon vbox needs is up and answering (not only started)."""
    if name == "openvswitch":
        from providers.ovs import unavailable

        return unavailable() is None
    return _socket_answers(SOCKETS[name]) if name in SOCKETS else check_lxcfs().ok


def _wait_ready(name: str) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if ready(name):
            return True
        time.sleep(0.2)
    return False


def start_daemon(name: str) -> str:
    """Start a daemon and check that it answers; returns how it was started. On a systemd
    host through its unit; a unit that does not come up is explained with systemd's own
    words (lxcfs's unit refuses to run in a container: vbox then starts lxcfs itself)."""
    from vbox_cli import proc
    from vbox_cli.errors import VboxError

    unit = "openvswitch-switch" if name == "openvswitch" else name
    if systemd_is_init():
        started = proc.run(["systemctl", "start", unit], check=False, timeout=120)
        if _wait_ready(name):
            return f"started {name} (systemd unit {unit})"
        status = proc.run(["systemctl", "status", "--no-pager", "--lines=5", unit], check=False, timeout=30).stdout
        condition = next((line.strip() for line in status.splitlines() if "Condition" in line), "")
        if name == "lxcfs" and condition:
            _start_directly(name)
            if _wait_ready(name):
                return f"started lxcfs itself: its systemd unit did not run ({condition})"
        why = condition or (started.stderr.strip().splitlines() or ["it did not answer"])[-1]
        raise VboxError(f"{name} did not start: {why}", hint=f"`systemctl status {unit}`, `journalctl -u {unit}`",
                        details=status.strip() or None)
    _start_directly(name)
    if _wait_ready(name):
        return f"started {name}"
    log = {"lxcfs": LXCFS_LOG, "openvswitch": "/var/log/openvswitch/",
           "libvirtd": f"/var/log/libvirt/libvirtd.log and {REAPER_LOG}"}.get(name, f"/var/log/libvirt/{name}.log")
    raise VboxError(f"{name} did not come up within {START_TIMEOUT:g} s", hint=f"see {log}")


def _start_directly(name: str) -> None:
    """As a daemon of its own, where no systemd starts it."""
    from vbox_cli import proc

    if name == "dbus":  # the system bus; it starts polkitd when libvirtd first asks it
        os.makedirs("/run/dbus", exist_ok=True)
        clear_stale_pidfile(Path(DBUS_PIDFILE), "dbus-daemon")
        proc.run(["dbus-daemon", "--system", "--fork"])
    elif name == "libvirtd":  # under a reaper of its own: its stopped QEMUs are gone at once
        reaper = Path(__file__).with_name("reaper.py")
        proc.spawn_daemon([sys.executable, "-I", "-S", str(reaper), name, "--daemon"], REAPER_LOG)
    elif name in SOCKETS:
        proc.run([name, "--daemon"])
    elif name == "openvswitch":  # ovsdb-server and ovs-vswitchd, by Open vSwitch's own script
        proc.run([OVS_CTL, "--no-monitor", "--system-id=random", "start"], timeout=120)
    else:
        os.makedirs(LXCFS_MOUNT, exist_ok=True)
        proc.spawn_daemon(["lxcfs", LXCFS_MOUNT], LXCFS_LOG)


DBUS_PIDFILE = "/run/dbus/pid"


def clear_stale_pidfile(pidfile: Path, program: str) -> bool:
    """Remove a pid file whose process is gone (a host restored from a snapshot, a daemon
    killed): dbus-daemon refuses to start beside one, where libvirtd and lxcfs lock theirs.
    A pid that runs `program` is left alone. Returns whether the file was removed."""
    try:
        pid = int(pidfile.read_text().strip())
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        pid = 0
    if pid > 0:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == program[:15]:
                return False
        except OSError:
            pass
    pidfile.unlink(missing_ok=True)
    return True


def restart_daemon(name: str) -> str:
    """Stop a daemon vbox needs and start it again (libvirtd: its machines keep running)."""
    from vbox_cli import proc

    if systemd_is_init():
        proc.run(["systemctl", "restart", name], timeout=120)
        if _wait_ready(name):
            return f"restarted {name}"
    else:
        pidfile = Path(f"/run/{name}.pid")
        try:
            pid = int(pidfile.read_text().strip())
            os.kill(pid, 15)
        except (OSError, ValueError):
            pid = 0
        deadline = time.monotonic() + START_TIMEOUT
        while pid and time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.1)
        return start_daemon(name)
    from vbox_cli.errors import VboxError

    raise VboxError(f"{name} did not come back")
