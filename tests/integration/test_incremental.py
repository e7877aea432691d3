"""Incremental re-provisioning with real machines: editing step 3 of 4 reruns steps 3 and
4 on the container restored to its state after step 2 (a file the old step 3 wrote is
gone); `env restore` drops what was done by hand. The orchestration is the same for every
provider; a KVM machine's snapshots (what differs) are in test_kvm_control.py."""

from __future__ import annotations



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
