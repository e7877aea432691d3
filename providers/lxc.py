"""LXC machines, over LXC's own tools (lxc-start, lxc-stop, lxc-info).

Not libvirt's LXC driver: it cannot start containers on a host with a hybrid cgroup
layout. vbox's containers live in a container path of their own (LXC_PATH), apart
from the user's other containers. A machine's root is an overlay: the box's root tree
below, the machine's own changes above (`delta/upper`), so making a machine copies
nothing. What vbox writes into a new machine (its SSH host keys, the project's
authorized key, its address) goes into that upper layer before the first boot. An
unprivileged machine's (`unprivileged = true`) overlay is mounted by vbox itself, on the
box tree seen in its ids (providers/lxc_unprivileged.py).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

from providers.base import MAX_NETWORKS, NOT_CREATED, RUNNING, STOPPED, MachineSpec, ProviderBase
from providers.guest import user_ids
from providers.ports import LocalPorts
from vbox_cli import proc
from vbox_cli.errors import VboxError

from providers.lxc_config import (
    CONFIG,
    CONSOLE_LOG,
    IDMAP,
    IDS,
    UPPER,
    VETH_PREFIX,
    folder_ids_maps,
    fstab_unescape,
    guest_files,
    mac_address,
    machine_ids,
    mount_entries,
    network_files,
    render_config,
    veth_name,
)

LXC_LOG = "lxc.log"
SNAPSHOTS = "snapshots"  # <container>/snapshots/<name>/{upper/, info.json}
DISK_IMAGE = "disk.img"  # a machine with `disk`: its own layer on a file system of that size
LAYER = "delta"  # where that file system is mounted (the overlay's upper and work folders)
FROZEN_MARK = "frozen"  # there while vbox holds the container frozen for a snapshot
CHECKPOINT = "checkpoint"  # a suspended container's processes, saved by CRIU (lxc-checkpoint)


def lxc_path() -> Path:
    from vbox_cli.paths import vbox_home

    return vbox_home() / "lxc"


def _make_parents(upper: Path, lower: Path, relative: Path, ids=None) -> None:
    # A folder in the upper layer hides the attributes of the lower one: copy them (its
    # owners shifted into an unprivileged machine's range, `ids`).
    current_upper, current_lower = upper, lower
    for part in relative.parent.parts:
        current_upper = current_upper / part
        # the lower folder's attributes, never through a link of the box's tree (it may lead
        # out of the tree, to this host's files)
        current_lower = current_lower / part if current_lower and not current_lower.is_symlink() else None
        if current_upper.exists():
            continue
        current_upper.mkdir()
        if current_lower is not None and not current_lower.is_symlink() and current_lower.is_dir():
            st = current_lower.stat()
            os.chown(current_upper, *_shift(ids, st.st_uid, st.st_gid))
            os.chmod(current_upper, st.st_mode & 0o7777)
        else:
            os.chown(current_upper, *_shift(ids, 0, 0))
            os.chmod(current_upper, 0o755)


def _shift(ids, uid: int, gid: int) -> tuple[int, int]:
    """The host's ids of a machine's (uid, gid): the same in a privileged machine."""
    return ids.shift(uid, gid) if ids else (uid, gid)


def discard(path: Path) -> None:
    from boxes.store import discard as remove

    remove(path)


def _same_system(pid: str) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") == os.readlink("/proc/self/ns/pid")
    except OSError:
        return False


def _fs_size(image: Path) -> int:
    """The size of the ext4 file system in an image, from its superblock."""
    fields = dict(line.split(":", 1) for line in proc.run(["dumpe2fs", "-h", str(image)]).stdout.splitlines()
                  if ":" in line)
    return int(fields["Block count"]) * int(fields["Block size"])


def _copy_tree(source: Path, target: Path) -> None:
    """A copy of an overlay layer with everything overlayfs keeps in it (owners, modes,
    whiteouts, the xattrs of opaque folders); reflinked where the file system can."""
    proc.run(["cp", "-a", "--reflink=auto", "--", str(source), str(target)], timeout=3600)


class LxcProvider(LocalPorts, ProviderBase):
    name = "lxc"
    label = "LXC container"
    needs = ("rootfs",)  # what it boots from a box (machines/boxes.py)
    snapshot_flush = "host"  # its file systems' cache is this host's: freezing it is enough for a snapshot

    def __init__(self, path: Path | None = None):
        self.path = path or lxc_path()

    def joins_networks(self) -> bool:
        return True

    @property
    def network_host(self):
        # the veth joins the bridge of the project network that this host's libvirt holds
        from providers.hosts import local

        return local()

    def _folder(self, object_name: str) -> Path:
        return self.path / object_name

    def _tool(self, tool: str, object_name: str, *args: str, check: bool = True, timeout: float = 60):
        return proc.run([tool, "-P", str(self.path), "-n", object_name, *args], check=check, timeout=timeout)

    # -- state -----------------------------------------------------------------
    def state(self, object_name: str) -> str:
        if not (self._folder(object_name) / CONFIG).is_file():
            return NOT_CREATED
        result = self._tool("lxc-info", object_name, "-s", "-H", check=False, timeout=30)
        running = result.stdout.strip() in ("RUNNING", "STARTING", "FROZEN", "FREEZING")
        if running and (self._folder(object_name) / FROZEN_MARK).exists():
            self._thaw(object_name)  # a snapshot's copy cut short (vbox was killed): it stayed frozen
        return RUNNING if running else STOPPED

    def _freeze(self, object_name: str, pid: int, frozen: bool) -> None:
        """Through the container's cgroup (a 2 ms poll); through LXC's own tools (which poll
        every second) where this process cannot find that cgroup (a host whose cgroup
        mount is not its own namespace's, as in a container)."""
        from providers.stats import freeze

        try:
            freeze(pid, object_name, frozen)
        except (VboxError, OSError):
            self._tool("lxc-freeze" if frozen else "lxc-unfreeze", object_name)

    def _thaw(self, object_name: str) -> None:
        pid = self._init_pid(object_name)
        if pid is not None:
            self._freeze(object_name, pid, False)
        (self._folder(object_name) / FROZEN_MARK).unlink(missing_ok=True)

    def stats(self, object_name: str):
        from providers.stats import container_stats

        if self.state(object_name) != RUNNING:
            return None
        pid = int(self._tool("lxc-info", object_name, "-p", "-H").stdout.strip())
        found = container_stats(pid, object_name, veth_name(object_name), self._folder(object_name) / UPPER)
        layer = self._folder(object_name) / LAYER
        if (self._folder(object_name) / DISK_IMAGE).is_file() and os.path.ismount(layer):
            fs = os.statvfs(layer)  # its own disk: what its file system holds, and its size
            found.disk_size, found.disk_used = fs.f_blocks * fs.f_frsize, (fs.f_blocks - fs.f_bfree) * fs.f_frsize
        return found

    def objects(self, prefix: str) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if p.name.startswith(prefix) and p.is_dir())

    def owned(self, project_id: str) -> dict[str, str]:
        """machine -> container of that project, by the marker line in each config."""
        found = {}
        for name in self.objects("vbox-"):
            try:
                with open(self._folder(name) / CONFIG) as f:
                    head = [f.readline() for _ in range(3)]
            except OSError:
                continue
            for line in head:
                fields = dict(part.split("=", 1) for part in line[1:].split() if "=" in part)
                if line.startswith("# vbox project=") and fields.get("project") == project_id:
                    found[fields.get("machine", "")] = name
        return {machine: name for machine, name in found.items() if machine}

    def ssh_endpoint(self, object_name: str, address: str) -> tuple[str, int]:
        return address, 22

    # -- life cycle ------------------------------------------------------------
    def preflight(self, machine_name: str) -> None:
        if os.geteuid() != 0:
            raise VboxError(f"{machine_name}: LXC machines need root (they run under LXC's own runtime "
                            "on the project's network bridge)", hint='use provider = "kvm", or run as root')
        from providers.host import check_lxcfs

        lxcfs = check_lxcfs()
        if not lxcfs.ok:  # without it a machine sees the host's memory and CPUs, not its own limits
            raise VboxError(f"{machine_name}: lxcfs: {lxcfs.detail}", hint="`env doctor --fix` starts it")

    def create(self, spec: MachineSpec) -> None:
        self.preflight(spec.machine.name)
        folder = self._folder(spec.object_name)
        if folder.exists():  # a creation cut short: it never got its config
            self.destroy(spec.object_name)
        lower = spec.box.artefact("rootfs")
        upper = folder / UPPER
        ids = None
        if spec.machine.unprivileged:
            from providers.subids import required

            ids = required()
        folder.mkdir(parents=True)
        # an unprivileged machine's root (a host id of its range) passes through its folder
        # to its root tree; nothing else of the folder is readable by it
        os.chmod(folder, 0o711 if ids else 0o700)
        if spec.machine.disk_set:
            self._make_disk(folder, spec.machine.disk)
        upper.mkdir(parents=True)
        if ids:
            os.chown(upper, *ids.shift(0, 0))
        for relative, (content, mode, owner) in guest_files(spec).items():
            target = upper / relative
            _make_parents(upper, lower, Path(relative), ids)
            target.write_text(content)
            os.chown(target, *_shift(ids, *user_ids(spec.box, owner)))
            os.chmod(target, mode)
        if ids:
            # debugfs cannot be mounted in a user namespace: its unit would fail at every boot
            units = upper / "etc/systemd/system"
            _make_parents(upper, lower, Path("etc/systemd/system/x"), ids)
            (units / "sys-kernel-debug.mount").symlink_to("/dev/null")
            os.lchown(units / "sys-kernel-debug.mount", *ids.shift(0, 0))
            # last but the config: what makes the machine unprivileged, for its whole life
            (folder / IDS).write_text(ids.lines())
        self._write_network_files(spec)
        if spec.network and not spec.box.meta.recipe:
            # its address is set by LXC; a box vbox did not build may ask DHCP as well (a Vagrant
            # box's ifupdown): it gets the same one, not a second address from the pool. (Not for
            # vbox's boxes, which do not ask: the reservation costs 0.6 s of a 1.5 s up.)
            from providers.network import add_dhcp_host

            add_dhcp_host(self.network_host.conn, spec.network, mac_address(spec.object_name), spec.address,
                          spec.machine.hostname.split(".")[0])
        self._write_config(spec)  # last: a folder with a config is a complete machine

    # -- a disk of its own (`disk`): its layer on a file system of that size ---------
    # `df /` inside shows the size (overlayfs reports its upper layer's file system), writing
    # past it fails with ENOSPC inside, and this host's file system is not filled: the image
    # is a sparse file. ext4 on a loop device, mounted at delta/ while the machine exists.
    @staticmethod
    def _make_disk(folder: Path, size: int) -> None:
        image = folder / DISK_IMAGE
        with open(image, "wb") as f:
            f.truncate(size)
        os.chmod(image, 0o600)
        proc.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1",
                  "-L", "vbox-layer", str(image)], timeout=300)
        (folder / LAYER).mkdir()
        LxcProvider._mount_disk(folder)

    @staticmethod
    def _mount_disk(folder: Path) -> None:
        """Its file system mounted at delta/, if it has one and it is not (a host restart)."""
        image, layer = folder / DISK_IMAGE, folder / LAYER
        if image.is_file() and not os.path.ismount(layer):
            proc.run(["mount", "-o", "loop", str(image), str(layer)], timeout=60)

    def _grow_disk(self, object_name: str, size: int) -> None:
        """The image made bigger and its mounted file system grown into it, online (the
        kernel asks for CAP_SYS_RESOURCE, which a host in a container may not give)."""
        folder = self._folder(object_name)
        image = folder / DISK_IMAGE
        if image.stat().st_size < size:
            with open(image, "r+b") as f:
                f.truncate(size)
        device = proc.run(["findmnt", "-no", "SOURCE", str(folder / LAYER)]).stdout.strip()
        proc.run(["losetup", "-c", device])
        proc.run(["resize2fs", device], timeout=300)

    def _fit_disk(self, folder: Path, size: int) -> None:
        """Before a start: an image smaller than `disk` grown, and its file system, offline."""
        image, layer = folder / DISK_IMAGE, folder / LAYER
        if not image.is_file() or _fs_size(image) >= size:
            return
        if os.path.ismount(layer):
            proc.run(["umount", str(layer)], timeout=60)
        if image.stat().st_size < size:
            with open(image, "r+b") as f:
                f.truncate(size)
        proc.run(["e2fsck", "-f", "-p", str(image)], timeout=600)
        proc.run(["resize2fs", str(image)], timeout=600)

    def _write_config(self, spec: MachineSpec) -> None:
        from vbox_cli.files import atomic_write

        from providers import ovs

        folder = self._folder(spec.object_name)
        for old in folder.glob("ovs-*"):
            old.unlink()
        for i, net in enumerate(spec.networks, start=1):
            if net.kind == "ovs":
                atomic_write(folder / f"ovs-up-{i}", ovs.port_script(net.bridge, net.vlan), 0o700)
                atomic_write(folder / "ovs-down", ovs.down_script(), 0o700)
        atomic_write(folder / CONFIG, render_config(spec, folder), 0o600)

    def _write_network_files(self, spec: MachineSpec) -> None:
        """networkd's files of the extra networks, in the upper layer of a stopped machine
        (never under a running one's overlay)."""
        from vbox_cli.files import atomic_write

        folder = self._folder(spec.object_name)
        upper, ids = folder / UPPER, machine_ids(folder)
        network_dir = upper / "etc/systemd/network"
        for old in network_dir.glob("11-vbox-net*.network") if network_dir.is_dir() else ():
            old.unlink()
        for relative, (content, mode, owner) in network_files(spec).items():
            _make_parents(upper, spec.box.artefact("rootfs"), Path(relative), ids)
            atomic_write(upper / relative, content, mode)
            os.chown(upper / relative, *_shift(ids, 0, 0))

    def apply_resources(self, spec: MachineSpec) -> None:
        """Before a start: the config (cpus, memory, folders, networks) as the spec says."""
        self._mount_disk(self._folder(spec.object_name))
        self._write_network_files(spec)
        self._write_config(spec)

    def change_live(self, spec: MachineSpec, was: dict):
        """Memory and CPUs through the running container's cgroup (lxcfs shows them inside
        at once), and in its config for the next start."""
        from providers.base import LiveChange
        from providers.lxc_config import cgroup_keys, cpuset
        from vbox_cli.envfile.types import format_size

        change = LiveChange([], [], [], [], {})
        if self.state(spec.object_name) != RUNNING:
            raise VboxError(f"{spec.object_name} is not running")
        memory_key, cpuset_key = (key.split(".", 1)[1] for key in cgroup_keys())  # memory.max, cpuset.cpus
        if "memory" in was:
            step = f"memory {format_size(was['memory'])} -> {format_size(spec.machine.memory)}"
            done = self._tool("lxc-cgroup", spec.object_name, memory_key, str(spec.machine.memory), check=False)
            if done.returncode == 0:
                change.done.append(step)
                change.applied["memory"] = spec.machine.memory
            else:  # EBUSY: it uses more than that, and the kernel could not reclaim it
                said = re.sub(r"^.*? main: \d+ ", "", (done.stderr.strip().splitlines() or ["lxc-cgroup failed"])[-1])
                change.later.append(f"{step}: the kernel refused it ({said}): it uses more than that now")
        if "cpus" in was:
            step = f"cpus {was['cpus']} -> {spec.machine.cpus}"
            cpus = cpuset(spec.machine.cpus, spec.index, os.cpu_count() or 1)
            self._tool("lxc-cgroup", spec.object_name, cpuset_key, cpus)
            change.done.append(step + (f" (this host has {os.cpu_count()})"
                                       if spec.machine.cpus > (os.cpu_count() or 1) else ""))
            change.applied["cpus"] = spec.machine.cpus
        if "disk" in was:
            step = f"disk {format_size(was['disk'])} -> {format_size(spec.machine.disk)}"
            if not (self._folder(spec.object_name) / DISK_IMAGE).is_file():
                change.refused.append(f"{step}: it was made without `disk`, so it has no disk of its own "
                                      "(`env destroy` and `env up` give it one)")
            elif spec.machine.disk < was["disk"]:
                change.refused.append(f"{step}: a disk does not shrink (`env destroy` and `env up` make it anew)")
            else:
                try:
                    self._grow_disk(spec.object_name, spec.machine.disk)
                    change.done.append(step)
                    change.applied["disk"] = spec.machine.disk
                except VboxError as exc:
                    change.later.append(f"{step}: its file system could not grow while mounted "
                                        f"({(exc.details or exc.message).strip().splitlines()[-1]}); it grows "
                                        "at its next start")
        self._write_config(spec)
        return change

    def update_folders(self, spec: MachineSpec) -> str | None:
        """A running container's synced folders made those of the spec, live: mounts that
        went are unmounted, new ones mounted (providers/livemount.py). What the config says
        is what is mounted; it is rewritten for the next start. Returns what was done."""
        from providers import idmap, livemount

        folder = self._folder(spec.object_name)
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
        pid = int(self._tool("lxc-info", spec.object_name, "-p", "-H").stdout.strip())
        try:
            for entry in gone:
                livemount.detach(pid, "/" + fstab_unescape(entry.split()[1]))
            if new and uid_map:
                idmap.ensure(folder / IDMAP, uid_map, gid_map)
            for share in new:
                livemount.attach(pid, share.source, share.target, folder / IDMAP if uid_map else None, share.readonly)
        finally:
            idmap.release(folder / IDMAP)
        self._write_config(spec)
        return (f"{len(new)} mounted" if new else "") + (", " if new and gone else "") + \
            (f"{len(gone)} unmounted" if gone else "")

    def start(self, spec: MachineSpec) -> None:
        from providers import idmap, lxc_unprivileged as unprivileged

        folder = self._folder(spec.object_name)
        if refused := self.refuses(spec.object_name, spec.machine):
            raise refused
        ids = machine_ids(folder)
        if spec.machine.disk_set:
            self._fit_disk(folder, spec.machine.disk)  # a bigger disk that could not grow live
        self._mount_disk(folder)  # a host restart unmounted it
        try:
            uid_map, gid_map = folder_ids_maps(spec, folder)
            if uid_map:  # for LXC to set the folders' mounts up; released once it has (finally)
                idmap.ensure(folder / IDMAP, uid_map, gid_map)
                for share in spec.folders:
                    if why := idmap.can_idmap(share.source, folder / IDMAP):
                        raise VboxError(f"{spec.machine.name}: the synced folder {share.source} cannot be shared "
                                        f"with its owners mapped ({why}): its file system does not take idmapped "
                                        "mounts", hint="move the project to a local file system (ext4, xfs, "
                                                       "btrfs), or set folders = [] for this machine")
            self._write_network_files(spec)  # stopped: nothing mounts its upper layer yet
            self._write_config(spec)
            (folder / CONSOLE_LOG).unlink(missing_ok=True)
            if ids:
                unprivileged.mount_root(folder, spec.box.artefact("rootfs"), ids)
                unprivileged.stage_folders(folder, spec.folders)
            self._lxc_start(spec.object_name, folder)
        finally:
            idmap.release(folder / IDMAP)
            if ids:  # the container holds its own copy of the mounts: none stays on this host
                unprivileged.unmount_root(folder)

    def refuses(self, object_name: str, machine) -> VboxError | None:
        """A machine is privileged or not for its whole life (its layer's owners are ids of
        one or the other)."""
        folder = self._folder(object_name)
        ids = machine_ids(folder)
        if not (folder / CONFIG).is_file() or bool(ids) == machine.unprivileged:  # not made yet: it will be
            return None
        return VboxError(f"{machine.name} was made {'unprivileged' if ids else 'privileged'}; unprivileged = "
                         f"{str(machine.unprivileged).lower()} takes effect when it is made anew",
                         hint=f"`env destroy {machine.name}` and `env up {machine.name}`")

    def _lxc_start(self, object_name: str, folder: Path) -> None:
        self._mount_disk(folder)
        self._settle(object_name)
        if (folder / CHECKPOINT).is_dir():  # suspended: its processes restored by CRIU
            result = self._tool("lxc-checkpoint", object_name, "-r", "-D", str(folder / CHECKPOINT), check=False,
                                timeout=600)
            discard(folder / CHECKPOINT)
            if result.returncode == 0:
                return
            raise VboxError(f"{object_name}: CRIU could not restore it: {result.stderr.strip() or 'failed'}",
                            hint="the saved processes are gone; `env up` starts it afresh")
        try:
            self._tool("lxc-start", object_name, "-o", str(folder / LXC_LOG), "-l", "WARN")
        except VboxError as exc:
            log = (folder / LXC_LOG).read_text(errors="replace").strip().splitlines() \
                if (folder / LXC_LOG).exists() else []
            errors = [line.split(" - ", 1)[-1].strip() for line in log if " ERROR " in line]
            reason = errors[0] if errors else exc.message  # the first: the cause; the last is lxc-start's summary
            raise VboxError(f"LXC could not start the container: {reason}", hint=f"the full log: {folder / LXC_LOG}",
                            details="\n".join(log[-20:]) or None) from None

    def halt(self, object_name: str, timeout: float = 30) -> bool:
        if self.state(object_name) != RUNNING:
            return True
        if timeout <= 0:
            self._tool("lxc-stop", object_name, "-k", check=False)
            return False
        result = self._tool("lxc-stop", object_name, "-t", str(int(timeout)), check=False, timeout=timeout + 30)
        if result.returncode != 0 and self.state(object_name) == RUNNING:
            self._tool("lxc-stop", object_name, "-k", check=False)
            return False
        return True

    def destroy(self, object_name: str) -> None:
        folder = self._folder(object_name)
        if (folder / CONFIG).is_file() and self.state(object_name) == RUNNING:
            self._tool("lxc-stop", object_name, "-k", check=False)
            deadline = time.monotonic() + 20
            while self.state(object_name) == RUNNING and time.monotonic() < deadline:
                time.sleep(0.1)
        self._remove_veths(object_name)  # before the container goes: a veth of no container is a leak
        discard(folder)
        if os.geteuid() == 0:
            import libvirt

            from providers.network import remove_dhcp_host

            try:
                remove_dhcp_host(self.network_host.conn, mac_address(object_name))
            except (VboxError, libvirt.libvirtError):
                pass  # libvirt is down: the entry goes with the project network

    def _remove_veths(self, object_name: str) -> None:
        for index in range(MAX_NETWORKS + 1):
            veth = veth_name(object_name, index)
            if os.path.exists(f"/sys/class/net/{veth}"):
                proc.run(["ip", "link", "delete", veth], check=False)
            if index and shutil.which("ovs-vsctl"):  # a port LXC's stop script did not get to remove
                proc.run(["ovs-vsctl", "--timeout=5", "--if-exists", "del-port", veth], check=False)

    def console_log(self, object_name: str) -> Path | None:
        return self._folder(object_name) / CONSOLE_LOG

    def console_command(self, object_name: str) -> list[str]:
        return ["lxc-console", "-P", str(self.path), "-n", object_name]

    # -- suspend: CRIU, through lxc-checkpoint -------------------------------------------
    def suspend(self, object_name: str) -> None:
        """Its processes saved by CRIU and the container stopped; the next start restores
        them (same PIDs, same state). CRIU is asked first whether it can work here at all
        (`criu check`), so that what blocks it is said."""
        import shutil

        if shutil.which("criu") is None:
            raise VboxError(f"{object_name}: suspending a container needs CRIU, which is not installed",
                            hint="apt-get install criu")
        check = proc.run(["criu", "check"], check=False, timeout=60)
        if check.returncode != 0:
            words = [line.split(": ", 1)[-1] for line in (check.stderr + check.stdout).splitlines() if line.strip()]
            version = proc.run(["criu", "--version"], check=False).stdout.split()[1:2]
            raise VboxError(f"{object_name}: CRIU {' '.join(version)} cannot checkpoint on this host "
                            f"(kernel {os.uname().release}): {'; '.join(words[:2]) or 'criu check failed'}",
                            hint="`env halt` it instead (a newer CRIU may know this kernel)")
        folder = self._folder(object_name)
        discard(folder / CHECKPOINT)
        (folder / CHECKPOINT).mkdir(mode=0o700)
        result = self._tool("lxc-checkpoint", object_name, "-s", "-D", str(folder / CHECKPOINT), check=False,
                            timeout=600)
        if result.returncode != 0:
            log = folder / CHECKPOINT / "dump.log"
            errors = [line for line in (log.read_text(errors="replace").splitlines() if log.exists() else [])
                      if "Error" in line]
            discard(folder / CHECKPOINT)
            raise VboxError(f"{object_name}: CRIU could not checkpoint it: "
                            f"{(errors[-1] if errors else result.stderr.strip() or 'lxc-checkpoint failed')}")

    def suspended(self, object_name: str) -> bool:
        return (self._folder(object_name) / CHECKPOINT).is_dir() and self.state(object_name) != RUNNING

    # -- snapshots ---------------------------------------------------------------
    # A snapshot is a copy of the overlay's upper layer (the machine's own changes; the box
    # below never changes), made with reflinks where the file system has them. A running
    # container is frozen for the copy, so that no process changes a file half-way.
    def snapshots(self, object_name: str):
        import json

        from providers.base import Snapshot

        found = []
        folder = self._folder(object_name) / SNAPSHOTS
        for entry in sorted(folder.iterdir()) if folder.is_dir() else ():
            try:
                info = json.loads((entry / "info.json").read_text())
            except (OSError, ValueError):
                continue  # a save cut short: it never got its info
            found.append(Snapshot(entry.name, float(info["created"]), bool(info["running"])))
        return sorted(found, key=lambda snap: snap.created)

    def snapshot_save(self, object_name: str, name: str):
        from providers.base import Snapshot, check_snapshot_name
        from vbox_cli.files import atomic_write

        check_snapshot_name(name)
        folder = self._folder(object_name)
        target = folder / SNAPSHOTS / name
        if target.exists():
            raise VboxError(f"{object_name} has a snapshot named {name} already")
        self._mount_disk(folder)
        partial = folder / SNAPSHOTS / f".{name}.partial"
        discard(partial)
        partial.mkdir(parents=True)
        pid = self._init_pid(object_name)  # None: stopped
        try:
            if pid is not None:
                (folder / FROZEN_MARK).touch()  # the next command thaws it if this one is killed
                self._freeze(object_name, pid, True)
            try:
                created = time.time()
                _copy_tree(folder / UPPER, partial / "upper")
            finally:
                if pid is not None:
                    self._thaw(object_name)
            import json

            atomic_write(partial / "info.json", json.dumps({"created": created, "running": pid is not None}) + "\n",
                         0o600)
            partial.rename(target)
        finally:
            discard(partial)
        return Snapshot(name, created, pid is not None)

    def _init_pid(self, object_name: str) -> int | None:
        result = self._tool("lxc-info", object_name, "-p", "-H", check=False, timeout=30)
        return int(result.stdout.strip()) if result.stdout.strip().isdigit() else None

    def snapshot_restore(self, object_name: str, name: str) -> None:
        """The upper layer replaced by a copy of the snapshot's (which stays); the new one
        is made beside it first, so that a restore cut short leaves the old layer or the
        new one whole (`_settle` finishes it)."""
        folder = self._folder(object_name)
        source = folder / SNAPSHOTS / name / "upper"
        if not (folder / SNAPSHOTS / name / "info.json").is_file():
            raise VboxError(f"{object_name} has no snapshot named {name}")
        if self.state(object_name) == RUNNING:
            raise VboxError(f"{object_name} is running: a snapshot is restored into a stopped container")
        upper = folder / UPPER
        fresh, old = upper.with_name("upper.new"), upper.with_name("upper.old")
        self._mount_disk(folder)
        self._settle(object_name)
        discard(fresh)
        if (folder / DISK_IMAGE).is_file():  # its disk may not hold two layers: the old one goes first
            upper.rename(old)
            discard(old)
        _copy_tree(source, fresh)
        if upper.exists():
            upper.rename(old)
        fresh.rename(upper)
        discard(old)

    def snapshot_delete(self, object_name: str, name: str) -> None:
        target = self._folder(object_name) / SNAPSHOTS / name
        if not (target / "info.json").is_file():
            raise VboxError(f"{object_name} has no snapshot named {name}")
        discard(target)

    def _settle(self, object_name: str) -> None:
        """Finish a restore that was cut short: the new layer whole, or the old one."""
        upper = self._folder(object_name) / UPPER
        fresh, old = upper.with_name("upper.new"), upper.with_name("upper.old")
        if not upper.exists() and old.exists():
            (fresh if fresh.exists() else old).rename(upper)
        if not upper.exists() and (self._folder(object_name) / CONFIG).is_file():
            raise VboxError(f"{object_name}: its layer was being restored from a snapshot when vbox stopped",
                            hint="`env snapshot restore MACHINE NAME` again")
        discard(old)
        discard(fresh)

    # -- leftovers -------------------------------------------------------------
    def leaks(self, prefix: str) -> list[str]:
        from boxes.store import mounts_under

        found = [f"LXC container {name}" for name in self.objects(prefix)]
        living = {str(self._folder(name) / LAYER) for name in self.objects("vbox-")
                  if (self._folder(name) / CONFIG).is_file()}  # a machine's own disk
        found += [f"mount {point}" for point in mounts_under(self.path) if f"/{prefix}" in point
                  and point not in living]
        for link in os.listdir("/sys/class/net"):
            if link.startswith(VETH_PREFIX) and not self._veth_in_use(link):
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
            if cmdline.startswith(f"[lxc monitor] {self.path} {prefix}") and _same_system(pid):
                found.append(f"LXC monitor process {pid}: {cmdline.strip()}")
        return found

    def _veth_in_use(self, link: str) -> bool:
        # a veth of a container that exists, of any project, starting or stopping: it goes
        # with that container (destroy removes a container's veths before the container)
        return any(link in {veth_name(name, i) for i in range(MAX_NETWORKS + 1)} for name in self.objects("vbox-"))
