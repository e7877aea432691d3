"""env suspend / resume with real machines: a KVM machine (no synced folder) is saved by
libvirt and its QEMU ends (this host's memory freed), and a process in it keeps its PID
and its count across suspend and resume, in the same boot; one with a synced folder is
refused, saying why. A container is suspended through CRIU where `criu check` passes here;
where it does not (Debian 12's CRIU on a newer kernel), suspend says what blocks it."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.integration.test_lxc import Project
from tests.integration.test_snapshots import project  # noqa: F401 - the fixture (destroyed, no leaks)

COUNTER = "nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done' >/dev/null 2>&1 & echo $!"


def qemu_running(project: Project, machine: str) -> bool:
    return subprocess.run(["pgrep", "-f", f"guest=vbox-{project.id}-{machine},"], capture_output=True).returncode == 0


@pytest.mark.slow
def test_kvm_suspend_and_resume(project):  # noqa: F811
    project.write('[machines.vm]\nprovider = "kvm"\nfolders = []\n\n'
                  '[machines.shared]\nprovider = "kvm"\nautostart = false\n')
    project.env("up")
    pid = project.ssh("vm", COUNTER).strip()
    boot = project.ssh("vm", "cat /proc/sys/kernel/random/boot_id")
    project.ssh("vm", "sleep 1")
    assert "suspended" in project.env("suspend", "vm").stdout
    assert project.status()["vm"]["state"] == "suspended"
    assert not qemu_running(project, "vm")  # its memory is on disk, not in a QEMU here
    assert "resumed" in project.env("resume", "vm").stdout
    counted = int(project.ssh("vm", "cat /tmp/count"))
    assert project.ssh("vm", "cat /proc/sys/kernel/random/boot_id") == boot
    assert project.ssh("vm", f"cat /proc/{pid}/comm").strip() == "sh"  # the same process, the same PID
    project.ssh("vm", "sleep 1")
    assert int(project.ssh("vm", "cat /tmp/count")) > counted  # and it goes on counting
    # with a synced folder (the default): refused, saying why, and still running
    project.env("up", "shared")
    refused = project.env("suspend", "shared", check_rc=1)
    assert "synced folders (virtiofs), whose state QEMU cannot save" in refused.stdout + refused.stderr
    assert project.status()["shared"]["state"] == "running"


def test_container_suspend_through_criu_or_what_blocks_it(project):  # noqa: F811
    project.write("[machines.c]\n")
    project.env("up")
    pid = project.ssh("c", COUNTER).strip()
    if shutil.which("criu") is None:  # setup does not install it (it cannot run on this kernel)
        result = project.env("suspend", "c", check_rc=1)
        assert "needs CRIU, which is not installed" in result.stdout + result.stderr
        assert project.status()["c"]["state"] == "running"
        return
    criu = subprocess.run(["criu", "check"], capture_output=True, text=True)
    if criu.returncode != 0:
        result = project.env("suspend", "c", check_rc=1)
        said = result.stdout + result.stderr
        assert "cannot checkpoint on this host" in said and "CRIU" in said
        first = next(line for line in (criu.stderr + criu.stdout).splitlines() if line.strip())
        assert first.split(": ", 1)[-1] in said  # CRIU's own words
        assert project.status()["c"]["state"] == "running" and project.ssh("c", "echo up") == "up\n"
        return
    boot = project.ssh("c", "cat /proc/sys/kernel/random/boot_id")
    project.env("suspend", "c")
    assert project.status()["c"]["state"] == "suspended"
    project.env("resume", "c")
    assert project.ssh("c", "cat /proc/sys/kernel/random/boot_id") == boot
    assert project.ssh("c", f"cat /proc/{pid}/comm").strip() == "sh"
