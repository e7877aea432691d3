"""What a machine uses, read from the host (cgroups, the veth, libvirt), never by logging
in: CPU time, memory used and its limit, disk used and its size, network bytes, and for
containers the processes and the counters OpenVZ called beancounters (OOM kills, how
often the memory limit was hit). A figure the provider cannot know is None.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass
class MachineStats:
    cpu_seconds: float | None = None  # CPU time used since the machine started
    memory_used: int | None = None  # bytes, page cache that can be dropped left out
    memory_limit: int | None = None
    disk_used: int | None = None  # bytes the machine's own layer or disk takes on the host
    disk_size: int | None = None  # its disk's size (KVM); None: no quota (LXC)
    net_in: int | None = None  # bytes the machine received on the project network
    net_out: int | None = None
    processes: int | None = None
    oom_kills: int | None = None
    memory_limit_hits: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


# -- containers: their cgroup ----------------------------------------------------------


def cgroup_dirs(pid: int, name: str) -> dict[str, Path]:
    """controller -> the container's own cgroup folder (for cgroup v2: "unified"), from
    where its init process is: the folder named lxc.payload.NAME on its path (the
    container's processes may sit below it)."""
    found = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        parts = path.strip("/").split("/")
        top = f"lxc.payload.{name}"
        if top in parts:
            parts = parts[:parts.index(top) + 1]
        relative = "/".join(parts)
        if controllers == "":
            found["unified"] = CGROUP_ROOT / relative if not (CGROUP_ROOT / "unified").is_dir() \
                else CGROUP_ROOT / "unified" / relative
        for controller in controllers.split(","):
            if controller and not controller.startswith("name="):
                found[controller] = CGROUP_ROOT / controller / relative
    return found


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return None if text == "max" else int(text)


def _keyed(path: Path) -> dict[str, int]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    pairs = (line.split() for line in lines)
    return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].isdigit()}


def _subtree_sum(folder: Path, file: str, key: str) -> int | None:
    """`key` of `file` added up over the cgroup and every cgroup below it."""
    total, found = 0, False
    for root, _dirs, _files in os.walk(folder):
        value = _keyed(Path(root) / file).get(key)
        if value is not None:
            total, found = total + value, True
    return total if found else None


def container_stats(pid: int, name: str, veth: str | None, upper: Path) -> MachineStats:
    dirs = cgroup_dirs(pid, name)
    stats = MachineStats()
    if "memory" in dirs and (dirs["memory"] / "memory.usage_in_bytes").exists():  # cgroup v1
        memory = dirs["memory"]
        usage = _read_int(memory / "memory.usage_in_bytes")
        inactive = _keyed(memory / "memory.stat").get("total_inactive_file", 0)
        stats.memory_used = None if usage is None else max(0, usage - inactive)
        limit = _read_int(memory / "memory.limit_in_bytes")
        stats.memory_limit = limit if limit is not None and limit < 1 << 62 else None
        stats.memory_limit_hits = _read_int(memory / "memory.failcnt")
        stats.oom_kills = _subtree_sum(memory, "memory.oom_control", "oom_kill")  # v1 counts where the victim was
    elif "unified" in dirs:  # cgroup v2
        unified = dirs["unified"]
        usage = _read_int(unified / "memory.current")
        inactive = _keyed(unified / "memory.stat").get("inactive_file", 0)
        stats.memory_used = None if usage is None else max(0, usage - inactive)
        stats.memory_limit = _read_int(unified / "memory.max")
        events = _keyed(unified / "memory.events")
        stats.memory_limit_hits, stats.oom_kills = events.get("max"), events.get("oom_kill")
    if "cpuacct" in dirs and (dirs["cpuacct"] / "cpuacct.usage").exists():
        usage = _read_int(dirs["cpuacct"] / "cpuacct.usage")
        stats.cpu_seconds = None if usage is None else usage / 1e9
    elif "unified" in dirs:
        usec = _keyed(dirs["unified"] / "cpu.stat").get("usage_usec")
        stats.cpu_seconds = None if usec is None else usec / 1e6
    pids = dirs.get("pids") if "pids" in dirs and (dirs["pids"] / "pids.current").exists() else dirs.get("unified")
    if pids is not None:
        stats.processes = _read_int(pids / "pids.current")
    if veth is None:  # a user's machine: lxc-user-nic named its veth; its eth0 as it counts
        stats.net_in, stats.net_out = _eth0(pid)
    else:  # the host side of the veth: what it receives, the machine sent
        net = Path("/sys/class/net") / veth / "statistics"
        stats.net_in, stats.net_out = _read_int(net / "tx_bytes"), _read_int(net / "rx_bytes")
    stats.disk_used = tree_size(upper)
    return stats


def _eth0(pid: int) -> tuple[int | None, int | None]:
    """(received, sent) bytes of eth0 in the network namespace of process `pid`."""
    try:
        lines = Path(f"/proc/{pid}/net/dev").read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        name, _, counters = line.partition(":")
        if name.strip() == "eth0":
            fields = counters.split()
            return int(fields[0]), int(fields[8])
    return None, None


def tree_size(folder: Path) -> int:
    """Bytes the files below `folder` take on disk (links not followed, hard links once)."""
    total, seen = 0, set()
    for root, dirs, files in os.walk(folder):
        for entry in dirs + files:
            try:
                info = os.lstat(os.path.join(root, entry))
            except OSError:
                continue
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            total += info.st_blocks * 512
    return total


# -- libvirt domains --------------------------------------------------------------------


def domain_stats(dom) -> MachineStats:
    import xml.etree.ElementTree as ET

    import libvirt

    _state, _max_kib, kib, _vcpus, cpu_ns = dom.info()  # the memory it has now, not what it may grow to
    stats = MachineStats(cpu_seconds=cpu_ns / 1e9, memory_limit=kib * 1024)
    try:
        memory = dom.memoryStats()
    except libvirt.libvirtError:
        memory = {}
    if "available" in memory and "unused" in memory:  # the guest's own view (balloon statistics)
        stats.memory_used = (memory["available"] - memory["unused"]) * 1024
    elif "rss" in memory:
        stats.memory_used = memory["rss"] * 1024  # what QEMU holds on the host
    root = ET.fromstring(dom.XMLDesc(0))
    disk = root.find("devices/disk[@device='disk']/target")
    if disk is not None:
        try:
            capacity, allocation, _physical = dom.blockInfo(disk.get("dev"))
            stats.disk_size, stats.disk_used = capacity, allocation
        except libvirt.libvirtError:
            pass
    interface = root.find("devices/interface/target")
    if interface is not None:
        try:
            counters = dom.interfaceStats(interface.get("dev"))  # the guest's view: rx is what it received
            stats.net_in, stats.net_out = counters[0], counters[4]
        except libvirt.libvirtError:
            pass
    return stats


# -- containers: freezing them (a snapshot's copy) ----------------------------------------


def freeze(pid: int, name: str, frozen: bool, timeout: float = 20.0) -> None:
    """Freeze (or thaw) the container's cgroup and wait until the kernel says it is,
    polling every 2 ms (lxc-freeze polls every second: a snapshot took a second more
    every other time). cgroup v1's freezer where the container has one, else v2's
    cgroup.freeze."""
    import time

    from vbox_cli.errors import VboxError

    dirs = cgroup_dirs(pid, name)
    if "freezer" in dirs and (dirs["freezer"] / "freezer.state").exists():
        control, want = dirs["freezer"] / "freezer.state", "FROZEN" if frozen else "THAWED"
        control.write_text(want)
        done = lambda: control.read_text().strip() == want  # noqa: E731
    elif "unified" in dirs and (dirs["unified"] / "cgroup.freeze").exists():
        (dirs["unified"] / "cgroup.freeze").write_text("1" if frozen else "0")
        done = lambda: _keyed(dirs["unified"] / "cgroup.events").get("frozen") == int(frozen)  # noqa: E731
    else:
        raise VboxError(f"{name}: no cgroup freezer found for it (neither cgroup v1's freezer nor v2's cgroup.freeze)")
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise VboxError(f"{name}: its processes did not {'stop' if frozen else 'go on'} within {timeout:g} s")
        time.sleep(0.002)
