"""What an LXC machine has on this host beside its folder: a veth per network (removed
before the container goes), the mounts and monitor process while it runs; and what of
these a destroy left behind (`env doctor --leaks`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from providers.base import MAX_NETWORKS
from providers.lxc_config import CONFIG, VETH_PREFIX, veth_name
from providers.lxc_layer import LAYER
from vbox_cli import proc

if TYPE_CHECKING:
    from providers.lxc import LxcProvider


def remove_veths(object_name: str) -> None:
    """Its veths on this host (one per network), and their Open vSwitch ports."""
    ports = []
    for index in range(MAX_NETWORKS + 1):
        veth = veth_name(object_name, index)
        if os.path.exists(f"/sys/class/net/{veth}"):
            proc.run(["ip", "link", "delete", veth], check=False)
        if index:
            ports += ["--", "--if-exists", "del-port", veth]
    if shutil.which("ovs-vsctl"):  # ports LXC's stop script did not get to remove: one transaction
        proc.run(["ovs-vsctl", "--timeout=5", *ports[1:]], check=False)


def leaks(machines: LxcProvider, prefix: str) -> list[str]:
    """Containers of the prefix, mounts under the LXC path that no machine holds, veths of
    no container, and LXC monitors of vbox's path."""
    from boxes.store import mounts_under

    found = [f"LXC container {name}" for name in machines.objects(prefix)]
    living = {str(machines.folder(name) / LAYER) for name in machines.objects("vbox-")
              if (machines.folder(name) / CONFIG).is_file()}  # a machine's own disk
    found += [f"mount {point}" for point in mounts_under(machines.path) if f"/{prefix}" in point
              and point not in living]
    for link in os.listdir("/sys/class/net"):
        if link.startswith(VETH_PREFIX) and not _veth_in_use(machines, link):
            found.append(f"veth {link} (of no vbox container)")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # a monitor of vbox's container path (not of another tool's containers named vbox-...),
        # in this PID namespace (not a vbox in a container of this host: its path is its own)
        if cmdline.startswith(f"[lxc monitor] {machines.path} {prefix}") and _same_system(pid):
            found.append(f"LXC monitor process {pid}: {cmdline.strip()}")
    return found


def _veth_in_use(machines: LxcProvider, link: str) -> bool:
    # a veth of a container that exists, of any project, starting or stopping: it goes
    # with that container (destroy removes a container's veths before the container)
    return any(link in {veth_name(name, i) for i in range(MAX_NETWORKS + 1)} for name in machines.objects("vbox-"))


def _same_system(pid: str) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") == os.readlink("/proc/self/ns/pid")
    except OSError:
        return False
