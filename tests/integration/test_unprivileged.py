"""Unprivileged LXC machines for real (`unprivileged = true`, made by root): the machine's
root is a host id of root's subordinate range, its box tree is shared (mounted with its
owners mapped) and copied for none, synced folders and the memory limit work as in a
privileged machine, nothing stays mounted on this host, and a machine keeps the kind it
was made with."""

from __future__ import annotations

import os

from providers.leaks import find as find_leaks
from providers.lxc import lxc_path
from providers.subids import of_user
from tests.integration.test_folders import OWNER, _chown_tree, _host_mounts_under
from tests.integration.test_lxc import Project


def _host_ids(pid: int) -> tuple[int, int]:
    """The real uid and gid of a host process."""
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status").read().splitlines() if ":" in line)
    return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])


def test_unprivileged_container(debian12, tmp_path):
    ids = of_user(0)
    assert ids is not None, "root has no subordinate ids: `env doctor --fix` gives it a range"
    project = Project(tmp_path / "unpriv")
    project.folder.mkdir()
    project.write("""
[machines.web]
unprivileged = true
memory = "256M"
provision = [{ shell = "echo made-by-root > /root/by-root" }]

[machines.old]
folders = []
""")
    _chown_tree(project.folder)
    folder = lxc_path() / f"vbox-{project.id}-web"
    try:
        project.env("up")
        # inside: root of its own user namespace, whose 0 is the range's first id
        assert project.ssh("web", "cat /proc/self/uid_map").split() == ["0", str(ids.uid), str(ids.count)]
        assert project.ssh("web", "cat /proc/self/gid_map").split() == ["0", str(ids.gid), str(ids.count)]
        # on this host, its init runs as that id, not as root; the privileged machine's as root
        assert _host_ids(_lxc_init(folder)) == (ids.uid, ids.gid)
        assert _host_ids(_lxc_init(lxc_path() / f"vbox-{project.id}-old")) == (0, 0)
        # the box's files keep their owners inside (mapped, not copied), and systemd is content
        assert project.ssh("web", "stat -c '%u %g %a' /etc/shadow /usr/bin/sudo") == "0 42 640\n0 0 4755\n"
        assert project.ssh("web", "sudo -n id -u") == "0\n"
        assert project.ssh("web", "systemctl is-system-running --wait") == "running\n"
        # what its root writes is the range's, on this host; a file of the box copied up too
        project.ssh("web", "sudo sh -c 'echo changed >> /etc/motd'")
        for relative in ("root/by-root", "etc/motd"):
            st = os.stat(folder / "delta/upper" / relative)
            assert (st.st_uid, st.st_gid) == (ids.uid, ids.gid), relative
        assert not any((folder / "lower").iterdir()) and not any((folder / "rootfs").iterdir())
        assert _host_mounts_under(str(folder)) == []  # the container holds its own copy
        # the memory limit, seen inside through lxcfs
        assert project.ssh("web", "free -m | awk '/^Mem:/ {print $2}'") == "256\n"
        # synced folder: the project folder's owner is the box user inside; its writes are the owner's
        assert project.ssh("web", "stat -c '%U' /vbox/Envfile") == "vbox\n"
        project.ssh("web", "echo hi > /vbox/from-web")
        st = os.stat(project.folder / "from-web")
        assert (st.st_uid, st.st_gid) == (OWNER, OWNER)
        # halt and up: the same machine, its files kept, nothing left mounted meanwhile
        project.env("halt", "web")
        assert _host_mounts_under(str(folder)) == []
        project.env("up", "web")
        assert project.ssh("web", "sudo cat /root/by-root") == "made-by-root\n"
        # a machine is privileged or not for its whole life: reload refuses before it stops it
        project.write((project.folder / "Envfile").read_text().replace("unprivileged = true", "unprivileged = false"))
        refused = project.env("reload", "web", check_rc=1)
        assert "web was made unprivileged" in refused.stdout + refused.stderr
        assert project.status()["web"]["state"] == "running"
        assert any("unprivileged true -> false" in line for line in project.status()["web"]["drift"])
    finally:
        project.env("destroy", "-f", check_rc=None)
    assert not folder.exists()
    assert _host_mounts_under(str(folder)) == []
    assert find_leaks(project.id) == []


def _lxc_init(folder) -> int:
    """The host pid of a running container's init."""
    from vbox_cli import proc

    return int(proc.run(["lxc-info", "-P", str(folder.parent), "-n", folder.name, "-p", "-H"]).stdout.strip())
