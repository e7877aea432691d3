"""Synced folders of LXC machines for real: live both ways, owners mapped (the project
folder's owner outside, the box's user inside), a read-only folder, inotify inside for
changes made on the host, and nothing left after destroy."""

from __future__ import annotations

import os
import time

from providers.leaks import find as find_leaks
from tests.integration.test_lxc import Project

OWNER = 4242  # the project folder's owner: a developer whose uid is not the box user's
WATCH = {
    # a real inotify watcher that is in every box: systemd's path units watch with inotify
    "watch.path": "[Path]\nPathModified=/vbox/trigger\n\n[Install]\nWantedBy=paths.target\n",
    "watch.service": "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'date +%%s.%%N >> /run/fired'\n",
}


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
    for root, dirs, files in os.walk(project.folder):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(name, OWNER, OWNER)
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
        fired = ""
        for _ in range(50):
            fired = project.ssh("web", "cat /run/fired 2>/dev/null || true").strip()
            if fired:
                break
            time.sleep(0.1)
        assert fired, "the machine's inotify watch did not fire"
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
