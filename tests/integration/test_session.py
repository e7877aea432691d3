"""KVM machines for a user without root: qemu:///session, user-mode networking, SSH
through a port forwarded on 127.0.0.1. The tool runs as a throw-away unprivileged user,
from a virtualenv made with the system's Python (as such a user would have it)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

USER = "vbox-session-test"
REPO = Path(__file__).resolve().parent.parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"


def _user_pids(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@pytest.fixture(scope="module")
def unprivileged(debian12):
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.fail(f"{SYSTEM_PYTHON} is needed to run vbox as an unprivileged user")
    base = Path(tempfile.mkdtemp(prefix="vbox-session-", dir="/tmp"))
    os.chmod(base, 0o755)
    home = base / "home"
    try:
        pwd.getpwnam(USER)
        subprocess.run(["userdel", "--force", USER], check=False)
    except KeyError:
        pass
    subprocess.run(["useradd", "--home-dir", str(home), "--create-home", "--shell", "/bin/sh", USER], check=True)
    uid = pwd.getpwnam(USER).pw_uid
    venv = base / "venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(REPO)],
                   check=True, timeout=900)
    try:
        yield {"venv": venv, "home": home, "uid": uid}
    finally:
        # everything this user runs was started by this test (its libvirtd, virtlogd, QEMU)
        for pid in _user_pids(uid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while _user_pids(uid) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in _user_pids(uid):
            os.kill(pid, signal.SIGKILL)
        subprocess.run(["userdel", "--force", "--remove", USER], check=False)
        shutil.rmtree(base, ignore_errors=True)


def as_user(ctx, folder: Path, *args: str, check_rc: int | None = 0, timeout: float = 600):
    environ = {"HOME": str(ctx["home"]), "PATH": f"{ctx['venv']}/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    result = subprocess.run(["runuser", "-u", USER, "--", "env", "-i", *[f"{k}={v}" for k, v in environ.items()],
                             str(ctx["venv"] / "bin" / "vbox"), "--plain", *args],
                            cwd=folder, capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in result.stderr, result.stderr
    if check_rc is not None:
        assert result.returncode == check_rc, f"rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def virsh_session(ctx, *args: str) -> str:
    return subprocess.run(["runuser", "-u", USER, "--", "env", f"HOME={ctx['home']}", "virsh", "-c",
                           "qemu:///session", *args], capture_output=True, text=True, timeout=60).stdout


def test_kvm_machine_in_a_user_session(unprivileged):
    folder = unprivileged["home"] / "project"
    folder.mkdir()
    (folder / "Envfile").write_text('[machines.vm]\nprovider = "kvm"\nmemory = "768M"\n'
                                    'provision = [{ shell = "echo from session > /etc/motd" }]\n')
    subprocess.run(["chown", "-R", f"{USER}:", str(folder)], check=True)
    up = as_user(unprivileged, folder, "up")
    assert "libvirt qemu:///session (user-mode networking, SSH through 127.0.0.1)" in up.stdout
    status = json.loads(as_user(unprivileged, folder, "status", "--json").stdout)["machines"][0]
    assert status["state"] == "running" and status["address"].startswith("127.0.0.1:")
    assert as_user(unprivileged, folder, "ssh", "vm", "--", "cat /etc/motd; hostname").stdout == \
        "from session\nvm\n"
    assert os.stat(folder / ".vbox" / "id_ed25519").st_uid == unprivileged["uid"]
    assert "vbox-" in virsh_session(unprivileged, "list", "--all", "--name")
    # the box came from root's store: nothing was built
    assert not (unprivileged["home"] / ".local/share/vbox/boxes/debian-12").exists()
    as_user(unprivileged, folder, "destroy", "-f")
    assert "vbox-" not in virsh_session(unprivileged, "list", "--all", "--name")
    assert "vbox-" not in virsh_session(unprivileged, "vol-list", "vbox")
    assert not (folder / ".vbox").exists()


def test_lxc_machines_say_they_need_root(unprivileged):
    folder = unprivileged["home"] / "lxcproject"
    folder.mkdir()
    (folder / "Envfile").write_text('[machines.ct]\nprovider = "lxc"\n')
    subprocess.run(["chown", "-R", f"{USER}:", str(folder)], check=True)
    result = as_user(unprivileged, folder, "up", check_rc=None)
    assert result.returncode != 0
    assert "need root" in result.stderr
