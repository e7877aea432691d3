"""Incremental re-provisioning with real machines: editing step 3 of 4 reruns steps 3 and
4 on the machine restored to its state after step 2 (a file the old step 3 wrote is
gone), for an LXC container and a KVM machine; `env restore` drops what was done by hand;
a KVM machine's own snapshot taken running (with its synced folder) and restored."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_lxc import Project
from tests.integration.test_snapshots import project  # noqa: F401 - the fixture (destroyed, no leaks)

STEPS = """\
[machines.m]
provider = "{provider}"
provision = [
  {{ shell = "date +%s%N > /root/step1" }},
  {{ shell = "date +%s%N > /root/step2" }},
  {{ shell = "echo old > /root/old3" }},
  {{ shell = "date +%s%N > /root/step4; ls /root > /root/seen-by-4" }},
]
"""


def read(project: Project, path: str) -> str:
    return project.ssh("m", f"sudo cat {path}").strip()


def check_edit_of_step_3(project: Project, provider: str) -> None:
    project.write(STEPS.format(provider=provider))
    project.env("up")
    first = {n: read(project, f"/root/step{n}") for n in (1, 2, 4)}
    assert read(project, "/root/old3") == "old"
    project.write(STEPS.format(provider=provider).replace("echo old > /root/old3", "echo new > /root/new3"))
    result = project.env("provision")
    assert "back to after step 2, provisioned (2 steps)" in result.stdout
    assert project.env("ssh", "m", "--", "sudo test -e /root/old3", check_rc=None).returncode == 1
    assert read(project, "/root/new3") == "new"
    assert read(project, "/root/step1") == first[1] and read(project, "/root/step2") == first[2]  # not run again
    assert read(project, "/root/step4") != first[4]  # run again, after the new step 3
    assert read(project, "/root/seen-by-4").split() == ["new3", "seen-by-4", "step1", "step2", "step4"]


def boot_id(project: Project) -> str:
    return project.ssh("m", "cat /proc/sys/kernel/random/boot_id").strip()


def test_lxc_edit_of_step_3_of_4_and_env_restore(project):
    check_edit_of_step_3(project, "lxc")
    # by hand since: `env restore` returns to the state after the last provisioning
    project.ssh("m", "echo drift | sudo tee /root/drift >/dev/null")
    assert "restored vbox-step-4, started" in project.env("restore").stdout
    assert project.env("ssh", "m", "--", "sudo test -e /root/drift", check_rc=None).returncode == 1
    assert read(project, "/root/new3") == "new"
    assert project.env("provision").stdout.count("nothing to do") == 1


@pytest.mark.slow
def test_kvm_edit_of_step_3_of_4_and_a_snapshot_of_it_running_with_its_folder(project):
    check_edit_of_step_3(project, "kvm")
    # a vCPU plugged in live (this host's CPUs are the most it can have)
    before = boot_id(project)
    two = STEPS.format(provider="kvm").replace('provider = "kvm"', 'provider = "kvm"\ncpus = 2')
    project.write(two.replace("echo old > /root/old3", "echo new > /root/new3"))
    assert "changed live (cpus)" in project.env("up").stdout
    assert project.ssh("m", "nproc").strip() == "2" and boot_id(project) == before
    # env snapshot of the running machine, whose synced folder QEMU could not save the memory of
    assert "Envfile" in project.ssh("m", "ls /vbox")
    project.ssh("m", "echo before | sudo tee /root/file >/dev/null")
    assert "saved s1 (running)" in project.env("snapshot", "save", "m", "s1").stdout
    project.ssh("m", "echo after | sudo tee /root/file >/dev/null; echo new | sudo tee /root/new >/dev/null")
    before = boot_id(project)
    assert "restored s1, started" in project.env("snapshot", "restore", "m").stdout
    assert boot_id(project) != before
    assert read(project, "/root/file") == "before"
    assert project.env("ssh", "m", "--", "sudo test -e /root/new", check_rc=None).returncode == 1
    assert "Envfile" in project.ssh("m", "ls /vbox")  # its folder is served again
    listed = json.loads(project.env("snapshot", "list", "--json").stdout)["snapshots"]
    assert [(s["name"], s["taken_while"], s["provisioned_steps"]) for s in listed] == [("s1", "running", 4)]
