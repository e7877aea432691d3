"""depends_on, protect and up --abort-on-error with real LXC machines: the order seen
through the clocks of the machines' own steps, a protected machine refusing destroy, and
an up that fails undoing what it made."""

from __future__ import annotations

import pytest

from providers.leaks import find as find_leaks
from tests.integration.test_lxc import Project

ORDERED = """
[defaults]
memory = "256M"

[machines.web]
depends_on = ["db", "cache"]
provision = [{ shell = "date +%s.%N > /root/started" }]

[machines.cache]
provision = [{ shell = "date +%s.%N > /root/started; sleep 1; date +%s.%N > /root/finished" }]

[machines.db]
protect = true
provision = [{ shell = "date +%s.%N > /root/started; sleep 2; date +%s.%N > /root/finished" }]
"""


@pytest.fixture
def project(debian12, tmp_path):
    folder = tmp_path / "ordered"
    folder.mkdir()
    p = Project(folder)
    p.write(ORDERED)
    yield p
    p.env("destroy", "-f", "--force-protected", check_rc=None)
    assert find_leaks(p.id) == []
    assert not (folder / ".vbox").exists()


def clock(project: Project, machine: str, what: str) -> float:
    return float(project.ssh(machine, f"sudo cat /root/{what}"))


def test_depends_on_orders_the_steps_and_protect_refuses_destroy(project):
    up = project.env("up", "web")  # brings up db and cache too
    assert {"web", "db", "cache"} <= set(project.status())
    assert all(m["state"] == "running" for m in project.status().values())
    # the machines share one clock (LXC): web's step began after both of its dependencies' ended
    web = clock(project, "web", "started")
    assert web >= clock(project, "db", "finished") and web >= clock(project, "cache", "finished")
    assert clock(project, "cache", "started") < clock(project, "db", "finished")  # independent: in parallel
    assert "waiting" in up.stdout  # web said what it waited for
    refused = project.env("destroy", "-f", check_rc=1)
    assert "db is protected (protect = true in the Envfile): nothing was destroyed" in refused.stderr
    assert all(m["state"] == "running" for m in project.status().values())
    project.env("destroy", "-f", "web", "cache")
    assert project.status()["db"]["state"] == "running"
    project.env("destroy", "-f", "--force-protected")
    assert find_leaks(project.id) == []


def test_up_abort_on_error_destroys_what_it_made(project):
    project.write("""
        [machines.web]
        memory = "256M"

        [machines.db]
        memory = "256M"
        provision = [{ shell = "echo failing on purpose; exit 7" }]
        """)
    failed = project.env("up", "--abort-on-error", check_rc=1)
    assert "exit status 7" in failed.stderr and "made, then destroyed (--abort-on-error)" in failed.stdout
    assert find_leaks(project.id) == []
    assert not (project.folder / ".vbox").exists()


def test_triggers_on_the_host_and_in_a_machine(debian12, tmp_path):
    folder = tmp_path / "triggered"
    folder.mkdir()
    project = Project(folder)
    project.write("""
        [machines.web]
        memory = "256M"
        triggers = [
          { before = "up", run = "echo built > assets.txt" },
          { after = "up", run_in = "web", shell = "cat /vbox/assets.txt > /root/seen; hostname >> /root/seen" },
          { after = "up", run = "echo web is at $VBOX_ADDRESS_WEB > address.txt" },
          { before = "destroy", run = "echo backup > backup.txt" },
        ]
        """)
    try:
        refused = project.env("up", check_rc=2)  # no terminal here: not accepted, nothing made
        assert "not accepted here" in refused.stderr and not (folder / "assets.txt").exists()
        assert "web" not in project.status() or project.status()["web"]["state"] == "not created"
        project.env("up", "--yes")
        assert project.ssh("web", "sudo cat /root/seen") == "built\nweb\n"  # the host's file, seen in the machine
        assert (folder / "address.txt").read_text() == f"web is at {project.status()['web']['address']}\n"
        project.env("up")  # accepted once: not asked again
        project.env("destroy", "-f")
        assert (folder / "backup.txt").read_text() == "backup\n"
    finally:
        project.env("destroy", "-f", "--yes", check_rc=None)
        _forget_acceptance(folder)
    assert find_leaks(project.id) == []


def _forget_acceptance(folder) -> None:
    """This test's entry in vbox's list of accepted host triggers (kept outside projects)."""
    import json
    import os

    from vbox_cli.machines.triggers import _approvals_path

    path = _approvals_path()
    approvals = json.loads(path.read_text())
    prefix = os.path.realpath(folder) + "\0"
    path.write_text(json.dumps({k: v for k, v in approvals.items() if not k.startswith(prefix)}))
