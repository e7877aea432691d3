"""What a running LXC machine takes without a restart: memory and CPUs through its
cgroup, its own disk grown, and its synced folders mounted or unmounted in it
(providers/livemount.py). Each is also written to its config for the next start."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from providers import idmap, livemount, lxc_config
from providers import lxc_layer as layer
from providers.base import RUNNING, LiveChange, MachineSpec
from providers.lxc_config import CONFIG, IDMAP, folder_ids_maps, fstab_unescape, machine_ids, mount_entries
from vbox_cli.envfile.types import format_size
from vbox_cli.errors import VboxError

if TYPE_CHECKING:
    from providers.lxc import LxcProvider


def change_live(machine: LxcProvider, spec: MachineSpec, was: dict) -> LiveChange:
    """Memory and CPUs through the running container's cgroup (lxcfs shows them inside
    at once), and in its config for the next start."""
    change = LiveChange([], [], [], [], {})
    if machine.state(spec.object_name) != RUNNING:
        raise VboxError(f"{spec.object_name} is not running")
    memory_key, cpuset_key = (key.split(".", 1)[1] for key in lxc_config.cgroup_keys())  # memory.max, cpuset.cpus
    if "memory" in was:
        step = f"memory {format_size(was['memory'])} -> {format_size(spec.machine.memory)}"
        done = machine.tool("lxc-cgroup", spec.object_name, memory_key, str(spec.machine.memory), check=False)
        if done.returncode == 0:
            change.done.append(step)
            change.applied["memory"] = spec.machine.memory
        else:  # EBUSY: it uses more than that, and the kernel could not reclaim it
            said = re.sub(r"^.*? main: \d+ ", "", (done.stderr.strip().splitlines() or ["lxc-cgroup failed"])[-1])
            change.later.append(f"{step}: the kernel refused it ({said}): it uses more than that now")
    if "cpus" in was:
        step = f"cpus {was['cpus']} -> {spec.machine.cpus}"
        cpus = lxc_config.cpuset(spec.machine.cpus, spec.index, os.cpu_count() or 1)
        machine.tool("lxc-cgroup", spec.object_name, cpuset_key, cpus)
        change.done.append(step + (f" (this host has {os.cpu_count()})"
                                   if spec.machine.cpus > (os.cpu_count() or 1) else ""))
        change.applied["cpus"] = spec.machine.cpus
    if "disk" in was:
        step = f"disk {format_size(was['disk'])} -> {format_size(spec.machine.disk)}"
        if not layer.has_disk(machine.folder(spec.object_name)):
            change.refused.append(f"{step}: it was made without `disk`, so it has no disk of its own "
                                  "(`env destroy` and `env up` give it one)")
        elif spec.machine.disk < was["disk"]:
            change.refused.append(f"{step}: a disk does not shrink (`env destroy` and `env up` make it anew)")
        else:
            try:
                layer.grow_disk(machine.folder(spec.object_name), spec.machine.disk)
                change.done.append(step)
                change.applied["disk"] = spec.machine.disk
            except VboxError as exc:
                change.later.append(f"{step}: its file system could not grow while mounted "
                                    f"({(exc.details or exc.message).strip().splitlines()[-1]}); it grows "
                                    "at its next start")
    machine._write_config(spec)
    return change

def update_folders(machine: LxcProvider, spec: MachineSpec) -> str | None:
    """A running container's synced folders made those of the spec, live: mounts that
    went are unmounted, new ones mounted (providers/livemount.py). What the config says
    is what is mounted; it is rewritten for the next start. Returns what was done."""
    folder = machine.folder(spec.object_name)
    try:
        config = (folder / CONFIG).read_text()
    except OSError:
        return None
    uid_map, gid_map = folder_ids_maps(spec, folder)
    wanted = dict(zip(mount_entries(spec, folder, idmapped=bool(uid_map), stage=machine_ids(folder) is not None),
                      spec.folders))
    current = [line.split("=", 1)[1].strip() for line in config.splitlines()
               if line.startswith("lxc.mount.entry")]
    gone = [entry for entry in current if entry not in wanted]
    new = [share for entry, share in wanted.items() if entry not in current]
    if not gone and not new:
        return None
    pid = int(machine.tool("lxc-info", spec.object_name, "-p", "-H").stdout.strip())
    try:
        for entry in gone:
            livemount.detach(pid, "/" + fstab_unescape(entry.split()[1]))
        if new and uid_map:
            idmap.ensure(folder / IDMAP, uid_map, gid_map)
        for share in new:
            livemount.attach(pid, share.source, share.target, folder / IDMAP if uid_map else None, share.readonly)
    finally:
        idmap.release(folder / IDMAP)
    machine._write_config(spec)
    return (f"{len(new)} mounted" if new else "") + (", " if new and gone else "") + \
        (f"{len(gone)} unmounted" if gone else "")
