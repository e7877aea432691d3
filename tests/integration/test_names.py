"""Machines answer to `NAME.PROJECT.vbox` from this host, `ssh` reaches them by that name
with the generated config (host key checked), and destroy removes the names."""

from __future__ import annotations

import subprocess

from providers.leaks import find as find_leaks
from tests.integration.test_lxc import Project


def test_names_from_the_host(debian12, tmp_path):
    project = Project(tmp_path / "names")
    project.folder.mkdir()
    project.write("[machines.web]\n[machines.db]\n")
    try:
        project.env("up")
        status = project.status()
        for machine in ("web", "db"):
            name = f"{machine}.{project.id}.vbox"
            resolved = subprocess.run(["getent", "hosts", name], capture_output=True, text=True).stdout.split()
            assert resolved[:2] == [status[machine]["address"], name]
        config = tmp_path / "ssh_config"
        config.write_text(project.env("ssh-config").stdout)
        out = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", f"web.{project.id}.vbox", "hostname"],
                             capture_output=True, text=True, timeout=60)
        assert out.stdout == "web\n", out.stderr
    finally:
        project.env("destroy", "-f", check_rc=None)
    assert subprocess.run(["getent", "hosts", f"web.{project.id}.vbox"], capture_output=True).returncode != 0
    assert f"# vbox {project.id} begin" not in open("/etc/hosts").read()
    assert find_leaks(project.id) == []
