"""Upgrade: a project brought up by the previous release of vbox (its `.vbox/` layout and
state, machines defined its way) is handled by this one: status, ssh, up, halt and
destroy work, and what the new release adds (the default synced folder) comes to the
machines it was made without.

The previous release is taken from git: the last landing before this release's
architecture change. A shallow clone lacks it; it is then fetched from `origin`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from providers.leaks import find as find_leaks
from tests.integration.test_libvirtd_restart import ENVFILE  # an LXC and a KVM machine, one step each
from tests.integration.test_lxc import Project

pytestmark = pytest.mark.slow(minutes=5)

REPO = Path(__file__).resolve().parents[2]
PREVIOUS = "ee5198efd14cbe9c69c6540bbc926229b148b60a"  # vbox 0.1 as it stood before the machines/ package


def _git(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, timeout=300, **kwargs)


def previous_release(dest: Path) -> Path:
    """The previous release's source tree, unpacked in dest."""
    if _git("cat-file", "-e", f"{PREVIOUS}^{{commit}}").returncode != 0:
        fetched = _git("fetch", "--quiet", "--depth", "1", "origin", PREVIOUS, text=True)
        assert fetched.returncode == 0, f"the previous release {PREVIOUS} is not in this clone and " \
                                        f"`git fetch origin` could not get it: {fetched.stderr}"
    archive = _git("archive", "--format=tar", PREVIOUS, check=True).stdout
    dest.mkdir(parents=True, exist_ok=True)
    # our own repository's archive, unpacked by tar (Debian 12's Python 3.11.2 has no
    # extraction filters)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True, timeout=120)
    assert (dest / "vbox_cli" / "entry.py").is_file()
    return dest


@pytest.fixture
def old_project(debian12, tmp_path):
    source = previous_release(tmp_path / "previous")
    folder = tmp_path / "upgraded"
    folder.mkdir()
    project = Project(folder)
    project.write(ENVFILE)

    def old_vbox(*args: str) -> subprocess.CompletedProcess:
        # the previous release's code on this virtualenv's Python and libraries (its own
        # dependencies are a subset of these); PYTHONPATH comes before the editable install
        launcher = "import sys; sys.argv[0] = 'vbox'; from vbox_cli.entry import vbox_main; vbox_main()"
        result = subprocess.run([sys.executable, "-c", launcher, "--plain", *args], cwd=folder, text=True,
                                capture_output=True, timeout=600, env={"PYTHONPATH": str(source),
                                                                       "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        assert result.returncode == 0, f"the previous release: {args}: {result.stdout}\n{result.stderr}"
        return result

    yield project, old_vbox
    project.env("destroy", "-f", check_rc=None)
    assert find_leaks(project.id) == []
    assert not (folder / ".vbox").exists()


def test_a_project_of_the_previous_release_goes_on_with_this_one(old_project):
    project, old_vbox = old_project
    old_vbox("up")
    assert not (project.folder / "Envfile.lock").exists()  # the previous release wrote none: it is really that
    status = project.status()
    assert (status["ct"]["state"], status["vm"]["state"]) == ("running", "running")
    assert project.ssh("vm", "sudo cat /root/once.log") == "once\n"  # its record and host key are taken
    # this release's up: nothing to make again, no step run again; the default synced folder
    # reaches the container live, and the VM (defined without it) is told to restart
    up = project.env("up")
    assert "nothing to do" in up.stdout
    assert "env up --restart-if-needed vm" in up.stdout + up.stderr
    (project.folder / "made-by-the-user.txt").write_text("kept\n")
    assert project.ssh("ct", "cat /vbox/made-by-the-user.txt") == "kept\n"
    project.env("up", "--restart-if-needed", "vm")
    assert project.ssh("vm", "cat /vbox/made-by-the-user.txt") == "kept\n"
    project.env("halt")
    project.env("up")
    for machine in ("ct", "vm"):
        assert project.ssh(machine, "sudo cat /root/once.log") == "once\n"
    project.env("destroy", "-f")
    assert find_leaks(project.id) == []
