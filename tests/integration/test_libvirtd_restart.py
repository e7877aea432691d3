"""libvirtd restarted under vbox: during an `up` of a KVM machine, and while machines run.
vbox connects again and carries on (or fails with a clear message that the next `up`
handles); the machines keep running; `status` and `up` afterwards tell the truth.

These tests restart this host's libvirtd: the one `env doctor --fix` started (or systemd's
unit). Its domains keep running through a restart (libvirtd reconnects to their QEMU)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from providers.daemons import start_daemon
from providers.host import systemd_is_init
from providers.leaks import find as find_leaks
from tests.integration.conftest import VBOX
from tests.integration.test_lxc import Project

pytestmark = [pytest.mark.slow, pytest.mark.exclusive]

PIDFILE = Path("/run/libvirtd.pid")
STOP_TIMEOUT = 90.0

ENVFILE = """
[machines.ct]
provider = "lxc"
provision = [{ shell = "echo once >> /root/once.log" }]

[machines.vm]
provider = "kvm"
memory = "768M"
provision = [{ shell = "echo once >> /root/once.log" }]
"""


def libvirtd_pid() -> int:
    pid = int(PIDFILE.read_text())
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "libvirtd", f"{PIDFILE} names {pid}, not libvirtd"
    return pid


def restart_libvirtd() -> None:
    """Stop libvirtd and start it again, as an administrator (or a package upgrade) would.
    libvirtd may take long to stop while it starts a domain on a loaded host: after
    STOP_TIMEOUT it is killed, as systemd would. It is running again afterwards whatever
    happened, so that no later test finds it gone."""
    if systemd_is_init():
        subprocess.run(["systemctl", "restart", "libvirtd"], check=True, timeout=300)
        return
    pid = libvirtd_pid()
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
            while alive(pid):
                time.sleep(0.1)
        time.sleep(0.5)  # the moment it is away
    finally:
        ensure_libvirtd()


def alive(pid: int) -> bool:
    """Running: a zombie has ended (a host whose init does not reap, as a container with
    `sleep infinity` as PID 1, keeps a daemon's zombie for ever)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def ensure_libvirtd() -> None:
    from providers.daemons import ready

    if not ready("libvirtd"):
        start_daemon("libvirtd")


@pytest.fixture
def project(debian12, tmp_path):
    folder = tmp_path / "restartproj"
    folder.mkdir()
    p = Project(folder)
    p.write(ENVFILE)
    yield p
    ensure_libvirtd()
    p.env("destroy", "-f", check_rc=None)
    assert find_leaks(p.id) == []
    assert not (folder / ".vbox").exists()


def qemu_pid(project: Project) -> int:
    return int(Path(f"/run/libvirt/qemu/vbox-{project.id}-vm.pid").read_text())


@pytest.mark.parametrize("delay", [0.8, 1.6, 5.0])
def test_libvirtd_restarted_during_up(project, delay):
    """While the VM is made, started or booting: the up connects again and carries on, or
    says clearly what broke; the next up finishes, each step having run once."""
    process = subprocess.Popen([str(VBOX), "--plain", "up"], cwd=project.folder, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    restart_libvirtd()
    out, err = process.communicate(timeout=600)
    assert "Traceback" not in err and "internal error" not in out + err, out + err
    if process.returncode != 0:
        assert "libvirt" in err, out + err  # what broke is named
    again = project.env("up")
    status = project.status()
    assert status["vm"]["state"] == "running" and status["ct"]["state"] == "running"
    assert project.ssh("vm", "sudo cat /root/once.log") == "once\n"
    assert project.ssh("ct", "sudo cat /root/once.log") == "once\n"
    if process.returncode == 0:
        assert "nothing to do" in again.stdout


def test_libvirtd_restarted_while_machines_run(project):
    project.env("up")
    before = qemu_pid(project)
    (project.folder / "made-before.txt").write_text("before\n")
    restart_libvirtd()
    assert qemu_pid(project) == before and Path(f"/proc/{before}").exists()  # the VM kept running
    status = project.status()
    assert status["vm"]["state"] == "running" and status["ct"]["state"] == "running"
    assert project.ssh("vm", "hostname") == "vm\n" and project.ssh("ct", "hostname") == "ct\n"
    (project.folder / "made-after.txt").write_text("after\n")  # the synced folder still serves
    assert project.ssh("vm", "cat /vbox/made-before.txt /vbox/made-after.txt") == "before\nafter\n"
    assert "nothing to do" in project.env("up").stdout
    assert qemu_pid(project) == before
    if not systemd_is_init():  # doctor's libvirtd runs under its reaper (providers/reaper.py)
        assert under_reaper(libvirtd_pid())
        # the VM's QEMU, orphaned by libvirtd when it daemonized it, went to the reaper of
        # the libvirtd that started it, not to PID 1
        assert under_reaper(before)


def under_reaper(pid: int) -> bool:
    parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
    return b"providers/reaper.py" in Path(f"/proc/{parent}/cmdline").read_bytes()
