"""A project's .vbox/: made by vbox with its own modes, never followed through a link,
and a lock that destroy cannot split."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vbox_cli.errors import VboxError
from vbox_cli.project import Project

VBOX = Path(sys.executable).parent / "vbox"


def test_modes_do_not_follow_the_umask(tmp_path):
    old = os.umask(0)
    try:
        project = Project.at(tmp_path)
        project.ensure_client_key()
        project.set_machine("web", address="10.1.2.3", host_key="ssh-ed25519 AAAA")
        project.write_known_hosts()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(project.state_dir).st_mode) == 0o700
    for name in ("id_ed25519", "state.json", "known_hosts"):
        assert stat.S_IMODE(os.stat(project.state_dir / name).st_mode) == 0o600, name


def test_a_private_key_left_world_readable_is_made_0600_again(tmp_path):
    project = Project.at(tmp_path)
    public = project.ensure_client_key()
    os.chmod(project.client_key, 0o644)
    assert project.ensure_client_key() == public
    assert stat.S_IMODE(os.stat(project.client_key).st_mode) == 0o600


def test_links_in_vbox_are_replaced_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("keep me\n")
    project = Project.at(tmp_path / "p")
    project.folder.mkdir()
    project.state_dir.mkdir()
    for name in ("id_ed25519.pub", "known_hosts", "state.json"):
        (project.state_dir / name).symlink_to(outside)
    with pytest.raises(VboxError, match="state.json cannot be read"):
        project.load_state()
    (project.state_dir / "state.json").unlink()
    project.ensure_client_key()
    project.set_machine("web", address="10.1.2.3", host_key="ssh-ed25519 AAAA")
    project.write_known_hosts()
    assert outside.read_text() == "keep me\n"
    assert not any(p.is_symlink() for p in project.state_dir.iterdir())
    project.remove_state_dir()
    assert outside.read_text() == "keep me\n" and not project.state_dir.exists()


def test_a_vbox_that_is_a_link_is_refused_and_kept(tmp_path):
    project = Project.at(tmp_path / "p")
    project.folder.mkdir()
    (project.folder / "data").write_text("data\n")
    project.state_dir.symlink_to("..")
    for action in (project.load_state, project.remove_state_dir, project.ensure_client_key):
        with pytest.raises(VboxError, match="is a symlink"):
            action()
    assert (project.folder / "data").read_text() == "data\n" and project.state_dir.is_symlink()


def test_the_lock_holds_across_destroy_removing_vbox(tmp_path):
    """The lock is on the project folder: while one command holds it and removes .vbox/,
    a command that was waiting and one that starts afterwards both still wait."""
    (tmp_path / "Envfile").write_text("[machines.web]\n")
    project = Project.at(tmp_path)
    project.ensure_dir()
    with project.lock():
        project.remove_state_dir()  # what destroy does while it holds the lock
        fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        env = {**os.environ, "VBOX_HOME": str(tmp_path / "home"), "VBOX_CACHE": str(tmp_path / "cache")}
        waiting = subprocess.Popen([str(VBOX), "--plain", "destroy", "-f"], cwd=tmp_path, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.5)
        assert waiting.poll() is None, "a second command ran while the first held the lock"
    out, _ = waiting.communicate(timeout=60)
    assert "another env command is running in this project; waiting" in out
    assert waiting.returncode == 0, out
