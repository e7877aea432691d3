"""`env ssh`'s shared connection and fast path (vbox_cli.sshmux): what the fast path
trusts, and when it steps aside for the whole way."""

from __future__ import annotations

import hashlib
import os
import re
import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vbox_cli import sshmux
from vbox_cli.projectid import project_id

OPTIONS = ["-o", "LogLevel=ERROR", "-o", "Port=22", "-o", "User=vbox"]


def _regex_id(folder: str) -> str:  # the definition project_id had when it used re
    real = os.path.realpath(folder)
    slug = re.sub(r"[^a-z0-9]+", "-", Path(real).name.lower()).strip("-")[:12].strip("-") or "project"
    return f"{slug}-{hashlib.sha256(real.encode()).hexdigest()[:6]}"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"), min_size=1,
               max_size=40))
def test_project_id_without_re_is_the_same_id(name):
    assert project_id(f"/nonexistent/{name}") == _regex_id(f"/nonexistent/{name}")


@pytest.fixture
def runtime(monkeypatch):
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="mux", dir="/tmp"))  # short: a socket's path has room for 107 bytes
    top = base / "run"
    monkeypatch.setattr(sshmux, "runtime_dir", lambda: str(top))
    yield top
    shutil.rmtree(base)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    folder = tmp_path / "proj"
    (folder / ".vbox").mkdir(parents=True)
    (folder / "Envfile").write_text('[machines.web]\nprovider = "lxc"\n')
    (folder / ".vbox" / "state.json").write_text("{}\n")
    monkeypatch.chdir(folder)
    return folder


def _master(path: str) -> socket.socket:
    """A Unix socket where a master's would be (bound, not listening: a client is refused
    at once)."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    return server


def _saved(folder, machine="web"):
    sshmux.save(str(folder), machine, OPTIONS, "10.1.2.3")
    return _master(sshmux.control_path(project_id(folder), machine))


def test_the_fast_path_runs_ssh_through_the_master(runtime, folder):
    assert sshmux.ssh_dir(make=True) == str(runtime / "ssh")
    assert os.stat(runtime / "ssh").st_mode & 0o777 == 0o700
    with _saved(folder):
        sock = sshmux.control_path(project_id(folder), "web")
        argv = sshmux.fast_argv(["--plain", "ssh", "web", "--", "uname", "-a"])
        assert argv == ["ssh", *OPTIONS, "-o", "ControlMaster=no", "-o", f"ControlPath={sock}", "--", "10.1.2.3",
                        "uname -a"]
        assert sshmux.fast_argv(["ssh", "web", "--", "ls | wc -l"])[-1] == "ls | wc -l"
        # from a folder inside the project too
        (folder / "sub").mkdir()
        os.chdir(folder / "sub")
        assert sshmux.fast_argv(["ssh", "web"])[-1] == "10.1.2.3"


@pytest.mark.parametrize("args", [["ssh"], ["ssh", "-h"], ["ssh", "--help"], ["ssh", "web", "extra"],
                                  ["-f", "Other", "ssh", "web"], ["ssh", "db"], ["status"]])
def test_anything_else_goes_the_whole_way(runtime, folder, args):
    sshmux.ssh_dir(make=True)
    with _saved(folder):
        assert sshmux.fast_argv(args) is None


def test_no_master_no_fast_path(runtime, folder):
    sshmux.ssh_dir(make=True)
    sshmux.save(str(folder), "web", OPTIONS, "10.1.2.3")
    assert sshmux.fast_argv(["ssh", "web"]) is None  # nothing listens: the whole way starts one


@pytest.mark.parametrize("change", ["state", "envfile"])
def test_a_changed_state_or_envfile_sends_ssh_the_whole_way(runtime, folder, change):
    sshmux.ssh_dir(make=True)
    with _saved(folder):
        path = folder / (".vbox/state.json" if change == "state" else "Envfile")
        path.write_text(path.read_text() + "\n")
        assert sshmux.fast_argv(["ssh", "web"]) is None


def test_a_record_of_another_folder_with_the_same_id_is_not_used(runtime, folder):
    sshmux.ssh_dir(make=True)
    with _saved(folder):
        record = Path(sshmux.control_path(project_id(folder), "web")).with_suffix(".json")
        text = record.read_text().replace(str(folder), str(folder) + "-other")
        record.write_text(text)
        assert sshmux.fast_argv(["ssh", "web"]) is None


def test_a_record_others_can_write_or_a_symlink_is_not_trusted(runtime, folder, tmp_path):
    sshmux.ssh_dir(make=True)
    with _saved(folder):
        record = Path(sshmux.control_path(project_id(folder), "web")).with_suffix(".json")
        record.chmod(0o666)
        assert sshmux.fast_argv(["ssh", "web"]) is None
        record.chmod(0o600)
        assert sshmux.fast_argv(["ssh", "web"]) is not None
        elsewhere = tmp_path / "elsewhere.json"
        elsewhere.write_text(record.read_text())
        elsewhere.chmod(0o600)
        record.unlink()
        record.symlink_to(elsewhere)
        assert sshmux.fast_argv(["ssh", "web"]) is None


def test_a_runtime_folder_others_can_write_is_not_used(runtime, folder):
    sshmux.ssh_dir(make=True)
    os.chmod(runtime, 0o777)
    assert sshmux.ssh_dir() is None and sshmux.control_path("p-abc123", "web") is None
    os.chmod(runtime, 0o700)
    (runtime / "ssh").rmdir()
    (runtime / "ssh").symlink_to(runtime)
    assert sshmux.ssh_dir(make=True) is None


def test_halting_closes_the_master_and_drops_the_record(runtime, folder):
    from vbox_cli.events import Event, Phase

    sshmux.ssh_dir(make=True)
    pid = project_id(folder)
    with _saved(folder), _saved(folder, "db"):
        assert len(sshmux.leaks(pid)) == 4
        closer = sshmux.Closer(pid)
        closer.handle(Event("phase", "web", phase=Phase.READY))
        assert len(sshmux.leaks(pid)) == 4
        closer.handle(Event("phase", "web", phase=Phase.HALTING))
        # web's socket refused `-O exit` (no ssh master here): removed all the same
        left = sshmux.leaks(pid)
        assert len(left) == 2 and all(sshmux._key(pid, "db") in line for line in left)
        assert sshmux.fast_argv(["ssh", "web"]) is None and sshmux.fast_argv(["ssh", "db"]) is not None
        assert sshmux.leaks("other-abc123") == []


def test_an_unreachable_machine_gets_no_master(runtime, tmp_path):
    sshmux.ssh_dir(make=True)
    sock = sshmux.control_path("p-abc123", "web")
    # a closed port on this host: refused at once, no socket left
    options = ["-o", "Port=1", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={tmp_path / 'kh'}"]
    assert sshmux.start_master(options, "127.0.0.1", sock, timeout=30) is False
    assert not os.path.exists(sock)
