"""The OpenVZ-grade controls on KVM machines, two of them booted at once to spare the
suite a boot: a snapshot of a running machine with its synced folder (QEMU could not save
its memory) restores a file and the folder is served again; a vCPU plugged in live, the
same boot; suspend refused with a synced folder, saying why; and a machine without one
suspended by libvirt (its QEMU gone: this host's memory freed) and resumed in the same
boot, a process in it keeping its PID and its count."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.integration.test_lxc import Project
from tests.integration.test_snapshots import project  # noqa: F401 - the fixture (destroyed, no leaks)

ENVFILE = """\
[machines.vm]
provider = "kvm"
provision = [{ shell = "echo one > /root/step1" }]

[machines.bare]
provider = "kvm"
folders = []
"""
COUNTER = "nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done' >/dev/null 2>&1 & echo $!"


def boot_id(project: Project, machine: str) -> str:
    return project.ssh(machine, "cat /proc/sys/kernel/random/boot_id").strip()


def qemu_running(project: Project, machine: str) -> bool:
    return subprocess.run(["pgrep", "-f", f"guest=vbox-{project.id}-{machine},"], capture_output=True).returncode == 0


@pytest.mark.slow
def test_kvm_snapshot_vcpu_and_suspend(project):  # noqa: F811
    project.write(ENVFILE)
    project.env("up")
    # a snapshot of the running machine with its synced folder
    assert "Envfile" in project.ssh("vm", "ls /vbox")
    project.ssh("vm", "echo before | sudo tee /root/file >/dev/null")
    assert "saved s1 (running)" in project.env("snapshot", "save", "vm", "s1").stdout
    project.ssh("vm", "echo after | sudo tee /root/file >/dev/null; echo new | sudo tee /root/new >/dev/null")
    before = boot_id(project, "vm")
    assert "restored s1, started" in project.env("snapshot", "restore", "vm").stdout
    assert boot_id(project, "vm") != before
    assert project.ssh("vm", "sudo cat /root/file") == "before\n"
    assert project.env("ssh", "vm", "--", "sudo test -e /root/new", check_rc=None).returncode == 1
    assert "Envfile" in project.ssh("vm", "ls /vbox")  # its folder is served again
    listed = json.loads(project.env("snapshot", "list", "--json").stdout)["snapshots"]
    assert [(s["name"], s["taken_while"], s["provisioned_steps"]) for s in listed] == [("s1", "running", 1)]
    assert len(json.loads(project.env("snapshot", "list", "--all", "--json").stdout)["snapshots"]) == 3
    # a vCPU plugged in live (this host's CPUs are the most it can have)
    after_restore = boot_id(project, "vm")
    project.write(ENVFILE.replace('provider = "kvm"\nprovision', 'provider = "kvm"\ncpus = 2\nprovision'))
    assert "changed live (cpus)" in project.env("up", "vm").stdout
    assert project.ssh("vm", "nproc").strip() == "2" and boot_id(project, "vm") == after_restore
    # suspend: refused with a synced folder, and it runs on
    refused = project.env("suspend", "vm", check_rc=1)
    assert "synced folders (virtiofs), whose state QEMU cannot save" in refused.stdout + refused.stderr
    assert project.status()["vm"]["state"] == "running"
    # suspend and resume of the one without: the same boot, the same process, counting on
    pid = project.ssh("bare", COUNTER).strip()
    boot = boot_id(project, "bare")
    project.ssh("bare", "sleep 1")
    assert "suspended" in project.env("suspend", "bare").stdout
    assert project.status()["bare"]["state"] == "suspended"
    assert not qemu_running(project, "bare")  # its memory is on disk, not in a QEMU here
    assert "resumed" in project.env("resume", "bare").stdout
    counted = int(project.ssh("bare", "cat /tmp/count"))
    assert boot_id(project, "bare") == boot
    assert project.ssh("bare", f"cat /proc/{pid}/comm").strip() == "sh"
    project.ssh("bare", "sleep 1")
    assert int(project.ssh("bare", "cat /tmp/count")) > counted
