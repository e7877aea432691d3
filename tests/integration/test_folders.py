"""Synced folders for real, of LXC and KVM machines: live both ways, owners mapped (the
project folder's owner outside, the box's user inside), a read-only folder, inotify
inside for changes made on the host, and nothing left after destroy."""

from __future__ import annotations

import os
import time

import pytest

from providers.leaks import find as find_leaks
from tests.integration.test_lxc import Project

OWNER = 4242  # the project folder's owner: a developer whose uid is not the box user's
WATCH = {
    # a real inotify watcher that is in every box: systemd's path units watch with inotify
    "watch.path": "[Path]\nPathModified=/vbox/trigger\n\n[Install]\nWantedBy=paths.target\n",
    "watch.service": "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'date +%%s.%%N >> /run/fired'\n",
}


def _chown_tree(folder) -> None:
    for root, dirs, files in os.walk(folder):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(name, OWNER, OWNER)


def _fired(project, machine: str) -> str:
    """What the machine's watch wrote when it fired (waits up to 10 s)."""
    for _ in range(100):
        fired = project.ssh(machine, "cat /run/fired 2>/dev/null || true").strip()
        if fired:
            return fired
        time.sleep(0.1)
    raise AssertionError("the machine's inotify watch did not fire")


def test_synced_folders(debian12, tmp_path):
    project = Project(tmp_path / "folders")
    (project.folder / "data").mkdir(parents=True)
    (project.folder / "data" / "input.txt").write_text("read me\n")
    for name, text in WATCH.items():
        (project.folder / name).write_text(text)
    project.write("""
[machines.web]
folders = [{ host = ".", guest = "/vbox" }, { host = "data", guest = "/srv/data", readonly = true }]
provision = [
  { file = "watch.path", to = "/etc/systemd/system/watch.path" },
  { file = "watch.service", to = "/etc/systemd/system/watch.service" },
  { shell = "systemctl daemon-reload && systemctl enable --now watch.path" },
]

[machines.plain]
folders = []
""")
    _chown_tree(project.folder)
    try:
        project.env("up")
        # the host's files are the box user's in the machine, and it may write there
        assert project.ssh("web", "stat -c '%U %G' /vbox/Envfile /vbox/data/input.txt") == "vbox vbox\nvbox vbox\n"
        assert project.ssh("web", "cat /srv/data/input.txt") == "read me\n"
        project.ssh("web", "echo from-the-machine > /vbox/made-inside && mkdir /vbox/newdir")
        made = project.folder / "made-inside"
        assert made.read_text() == "from-the-machine\n"
        assert (os.stat(made).st_uid, os.stat(made).st_gid) == (OWNER, OWNER)  # the project folder's owner
        assert os.stat(project.folder / "newdir").st_uid == OWNER
        # live the other way: written on the host, there at once
        (project.folder / "made-outside").write_text("from-the-host\n")
        assert project.ssh("web", "cat /vbox/made-outside") == "from-the-host\n"
        # read-only: the machine cannot write, not even root
        refused = project.env("ssh", "web", "--", "sudo touch /srv/data/x", check_rc=None)
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr + refused.stdout
        assert not (project.folder / "data" / "x").exists()
        # inotify in the machine sees a change made on the host
        before = time.time()
        (project.folder / "trigger").write_text("1\n")
        fired = _fired(project, "web")
        print(f"inotify: fired {float(fired.splitlines()[0]) - before:.3f} s after the host's write")
        # folders = [] turns the default off
        assert project.ssh("plain", "test -e /vbox && echo there || echo none") == "none\n"
        # a folder moved in the Envfile of a running machine: up applies it live (same boot)
        boot = project.ssh("web", "cat /proc/sys/kernel/random/boot_id")
        pid1 = project.ssh("web", "stat -c %Y /proc/1")
        text = (project.folder / "Envfile").read_text().replace('guest = "/vbox"', 'guest = "/project"')
        project.write(text)
        assert "web: synced folders changed in the Envfile: 1 mounted, 1 unmounted, live" in project.env("up").stdout
        assert project.ssh("web", "cat /project/made-outside") == "from-the-host\n"
        owners = project.ssh("web", "stat -c '%U' /project/Envfile /project/made-outside")
        assert owners == "vbox\nroot\n"  # mapped as at start (the test wrote made-outside as root)
        assert project.ssh("web", "mountpoint -q /vbox && echo mounted || echo gone") == "gone\n"
        project.ssh("web", "echo live > /project/live-write")
        assert os.stat(project.folder / "live-write").st_uid == OWNER
        assert project.ssh("web", "stat -c %Y /proc/1") == pid1 and \
            project.ssh("web", "cat /proc/sys/kernel/random/boot_id") == boot  # not restarted
        # and the next start mounts what the Envfile now says
        project.env("reload", "web")
        assert project.ssh("web", "cat /project/made-outside") == "from-the-host\n"
    finally:
        project.env("destroy", "-f", check_rc=None)
    assert find_leaks(project.id) == []
    assert (project.folder / "made-inside").exists()  # the project's files stay, of course


def _host_mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(path)]


@pytest.mark.slow
def test_kvm_synced_folders(debian12, tmp_path):
    """virtiofs: owners mapped as for LXC, read-only kept, nothing mounted on the host while
    the machine runs, a changed folder applied only with the user's consent."""
    project = Project(tmp_path / "kvmfolders")
    (project.folder / "data").mkdir(parents=True)
    (project.folder / "data" / "input.txt").write_text("read me\n")
    project.write("""
[machines.vm]
provider = "kvm"
memory = "768M"
folders = [{ host = ".", guest = "/vbox" }, { host = "data", guest = "/srv/my data", readonly = true }]
""")
    _chown_tree(project.folder)
    try:
        project.env("up")
        assert _host_mounts_under("/var/lib/vbox/shares") == []  # virtiofsd holds its own copy
        assert project.ssh("vm", "stat -c '%U %G' /vbox/Envfile '/srv/my data/input.txt'") == "vbox vbox\nvbox vbox\n"
        project.ssh("vm", "echo from-the-machine > /vbox/made-inside && mkdir /vbox/newdir")
        made = project.folder / "made-inside"
        assert made.read_text() == "from-the-machine\n"
        assert (os.stat(made).st_uid, os.stat(made).st_gid) == (OWNER, OWNER)
        assert os.stat(project.folder / "newdir").st_uid == OWNER
        (project.folder / "made-outside").write_text("from-the-host\n")
        assert project.ssh("vm", "cat /vbox/made-outside") == "from-the-host\n"
        # inotify in the machine for a file saved on the host (through vbox's folder watcher)
        (project.folder / "trigger").write_text("0\n")
        project.ssh("vm", "sudo systemd-run --quiet --unit=watch --path-property=PathModified=/vbox/trigger "
                          "sh -c 'date +%s.%N >> /run/fired'")
        (project.folder / "trigger").write_text("1\n")
        _fired(project, "vm")
        # (how soon: benchmarks/folders.py, which corrects for the machine's clock)
        time.sleep(1.5)
        assert len(project.ssh("vm", "cat /run/fired").splitlines()) == 1  # the watcher's touch comes back: no loop
        assert (project.folder / "trigger").read_text() == "1\n"
        refused = project.env("ssh", "vm", "--", "sudo touch '/srv/my data/x'", check_rc=None)
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr + refused.stdout
        assert not (project.folder / "data" / "x").exists()
        # a moved folder: a running KVM machine sees it after a restart, which up asks for
        boot = project.ssh("vm", "cat /proc/sys/kernel/random/boot_id")
        project.write((project.folder / "Envfile").read_text().replace('guest = "/vbox"', 'guest = "/project"'))
        said = project.env("up")
        assert "vm: the synced folders in the Envfile changed" in said.stdout + said.stderr
        assert "--restart-if-needed" in said.stdout + said.stderr
        assert project.ssh("vm", "cat /proc/sys/kernel/random/boot_id") == boot
        said = project.env("up", "--restart-if-needed")
        assert "restarted" in said.stdout
        assert project.ssh("vm", "cat /proc/sys/kernel/random/boot_id") != boot
        assert project.ssh("vm", "cat /project/made-outside") == "from-the-host\n"
        assert project.ssh("vm", "test -e /vbox/made-outside && echo there || echo gone") == "gone\n"
        assert "nothing to do" in project.env("up", "--restart-if-needed").stdout  # no change: no restart
    finally:
        project.env("destroy", "-f", check_rc=None)
    assert find_leaks(project.id) == []
    assert _host_mounts_under("/var/lib/vbox/shares") == []
