"""env snapshot with real machines: a file restored by a snapshot (and one written since
gone), for a running and a stopped LXC container; the provisioning record going back with
the disk; destroy leaving nothing. A KVM machine's: tests/integration/test_incremental.py
(one boot for both)."""

from __future__ import annotations

import json

import pytest

from providers.leaks import find as find_leaks
from tests.integration.test_lxc import Project

STEPS = """\
[machines.c]
provision = [
  { shell = "echo one > /root/step1" },
  { shell = "echo two > /root/step2" },
]
"""


@pytest.fixture
def project(debian12, tmp_path):
    folder = tmp_path / "snap"
    folder.mkdir()
    p = Project(folder)
    yield p
    p.env("destroy", "-f", check_rc=None)
    assert find_leaks(p.id) == []


def listing(project: Project) -> list[dict]:
    return json.loads(project.env("snapshot", "list", "--json").stdout)["snapshots"]


def boot_id(project: Project, machine: str) -> str:
    return project.ssh(machine, "cat /proc/sys/kernel/random/boot_id").strip()


def test_container_snapshots_restore_files_and_the_steps_run(project):
    project.write(STEPS)
    project.env("up")
    project.ssh("c", "sudo sh -c 'echo kept > /etc/kept && rm -rf /etc/cron.d && mkdir /etc/cron.d && "
                     "touch /etc/cron.d/mine'")
    saved = project.env("snapshot", "save", "c", "provisioned")
    assert "saved provisioned (running)" in saved.stdout
    # after the snapshot: a new step, a file written, one removed
    project.write(STEPS.replace('> /root/step2" },', '> /root/step2" },\n  { shell = "echo three > /root/step3" },'))
    project.env("provision", "c")
    project.ssh("c", "sudo sh -c 'echo later > /etc/later && rm /etc/kept'")
    before = boot_id(project, "c")
    restored = project.env("snapshot", "restore", "c")  # the newest
    assert "restored provisioned, started" in restored.stdout
    assert boot_id(project, "c") != before  # it was started again from the restored disk
    assert project.ssh("c", "sudo cat /etc/kept") == "kept\n"
    assert project.ssh("c", "sudo ls /etc/cron.d") == "mine\n"  # an opaque folder stays opaque
    assert project.env("ssh", "c", "--", "test -e /etc/later", check_rc=None).returncode == 1
    assert project.env("ssh", "c", "--", "sudo test -e /root/step3", check_rc=None).returncode == 1
    # the record went back with the disk: provision runs step 3 (only)
    rerun = project.env("provision", "c")
    assert "provisioned (1 step)" in rerun.stdout
    assert project.ssh("c", "sudo cat /root/step3") == "three\n"
    # a stopped container: saved and restored stopped
    project.env("halt")
    project.env("snapshot", "save", "c", "cold")
    assert [(s["name"], s["taken_while"], s["provisioned_steps"]) for s in listing(project)] == \
        [("provisioned", "running", 2), ("cold", "stopped", 3)]
    project.env("snapshot", "restore", "c", "provisioned")
    assert project.status()["c"]["state"] == "stopped"
    project.env("up", "--no-provision")
    assert project.env("ssh", "c", "--", "sudo test -e /root/step3", check_rc=None).returncode == 1
    project.env("snapshot", "delete", "c", "cold")
    assert [s["name"] for s in listing(project)] == ["provisioned"]
    # refusals: exit 2 before anything is opened for a bad name, 1 for a missing snapshot
    bad = project.env("snapshot", "save", "c", "../x", check_rc=2)
    assert "not a snapshot name" in bad.stderr
    missing = project.env("snapshot", "restore", "c", "nope", check_rc=1)
    assert "no snapshot named 'nope'" in missing.stderr and "its snapshots: provisioned" in missing.stderr


def test_a_container_left_frozen_by_a_killed_snapshot_is_thawed_by_the_next_command(project):
    """A vbox killed while it holds a container frozen for a snapshot's copy (its mark
    still there): the next command that looks at the machine thaws it."""
    import subprocess

    from providers.lxc import lxc_path
    from providers.lxc_freeze import FROZEN_MARK

    project.write("[machines.c]\n")
    project.env("up")
    name = f"vbox-{project.id}-c"
    (lxc_path() / name / FROZEN_MARK).touch()
    subprocess.run(["lxc-freeze", "-P", str(lxc_path()), "-n", name], check=True, timeout=60)
    assert project.status()["c"]["state"] == "running"
    assert project.ssh("c", "echo thawed") == "thawed\n"
    assert not (lxc_path() / name / FROZEN_MARK).exists()
