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
