"""A container's own disk (`disk` on an LXC machine): `df /` inside shows its size,
writing past it fails inside with "No space left on device" while this host's file
system is not filled, a bigger `disk` grows it (live where this host lets vbox, else at
the next start), a snapshot is restored into it, and destroy leaves no mount or image."""

from __future__ import annotations

import os

from tests.integration.test_lxc import Project
from tests.integration.test_snapshots import project  # noqa: F401 - the fixture (destroyed, no leaks)

MIB = 1024**2


def size_inside(project: Project) -> int:
    return int(project.ssh("c", "df --output=size -B1 / | tail -1"))


def test_container_disk_quota(project):  # noqa: F811
    from providers.lxc import lxc_path
    from providers.lxc_layer import DISK_IMAGE

    project.write('[machines.c]\ndisk = "1G"\n')
    project.env("up")
    assert 900 * MIB < size_inside(project) <= 1024 * MIB
    image = lxc_path() / f"vbox-{project.id}-c" / DISK_IMAGE
    host_free = os.statvfs(lxc_path()).f_bavail * os.statvfs(lxc_path()).f_frsize
    full = project.env("ssh", "c", "--", "sudo dd if=/dev/zero of=/root/fill bs=1M count=1100", check_rc=None)
    assert full.returncode != 0 and "No space left on device" in full.stderr + full.stdout
    assert os.stat(image).st_blocks * 512 <= 1040 * MIB  # the image holds it: sparse, at most its size
    assert host_free - os.statvfs(lxc_path()).f_bavail * os.statvfs(lxc_path()).f_frsize < 1040 * MIB
    stats = [m for m in __import__("json").loads(project.env("stats", "--json").stdout)["machines"]][0]
    assert stats["disk_size"] == size_inside(project) and stats["disk_used"] > 900 * MIB
    # a snapshot of the full disk, restored into it (the old layer goes first: no room for two)
    project.env("snapshot", "save", "c", "full")
    project.ssh("c", "sudo rm /root/fill")
    project.env("snapshot", "restore", "c", "full")
    assert int(project.ssh("c", "sudo stat -c %s /root/fill")) > 900 * MIB
    # bigger: live, or at the next start where this host does not let a mounted file system grow
    project.write('[machines.c]\ndisk = "2G"\n')
    grown = project.env("up")
    if "it grows at its next start" in grown.stdout:
        project.env("reload")
    assert 1900 * MIB < size_inside(project) <= 2048 * MIB
    assert project.ssh("c", "sudo dd if=/dev/zero of=/root/more bs=1M count=300 status=none && echo ok") == "ok\n"
