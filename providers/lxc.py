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
import time
from pathlib import Path

from providers.base import NOT_CREATED, RUNNING, STOPPED, MachineSpec, ProviderBase
from providers import lxc_criu as criu
from providers import lxc_freeze as freezing
from providers import lxc_layer as layer
from providers import lxc_user
from providers.lxc_freeze import FROZEN_MARK
from providers.lxc_host import remove_veths
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
    folder_ids_maps,
    guest_files,
    masked_units,
    mac_address,
    machine_ids,
    render_config,
    user_map_lines,
    veth_name,
)

LXC_LOG = "lxc.log"


def lxc_path() -> Path:
    from vbox_cli.paths import vbox_home

    return vbox_home() / "lxc"


class LxcProvider(LocalPorts, ProviderBase):
    name = "lxc"
    label = "LXC container"
    needs = ("rootfs",)  # what it boots from a box (machines/boxes.py)
    snapshot_flush = "host"  # its file systems' cache is this host's: freezing it is enough for a snapshot

    def __init__(self, path: Path | None = None):
        self.path = path or lxc_path()

    # env migrate: cold, always (providers/lxc_move.py), and without its snapshots (copies of
    # its layer, kept here)
    moves_cold = "vbox does not checkpoint a container's processes to another host"
    moves_snapshots = False
    remote = False

    def joins_networks(self) -> bool:
        return True

    @property
    def host(self):
        """This host's system libvirt: the one whose network the machines join."""
        from providers.hosts import local

        return local()

    # -- moving to another host and back (env migrate; providers/lxc_move.py) -------------
    def migrate(self, spec: MachineSpec, target, target_spec: MachineSpec, cold: bool, progress=None):
        """To another host's libvirt LXC driver (`target`: an LxcGuestProvider), cold."""
        from providers.lxc_move import move_out

        return move_out(self, spec, target, target_spec, progress)

    def adopt(self, spec: MachineSpec, fetch) -> int:
        """A machine coming back from another host: made here from its image (`fetch`)."""
        from providers.lxc_move import move_in

        return move_in(self, spec, fetch)

    def _unsupported(self, capability, spec: MachineSpec | None) -> str | None:
        return lxc_user.unsupported(capability)

    @property
    def network_host(self):
        return self.host  # the veth joins the bridge of the project network that this host's libvirt holds

    def folder(self, object_name: str) -> Path:
        return self.path / object_name

    def tool(self, tool: str, object_name: str, *args: str, check: bool = True, timeout: float = 60):
        return proc.run([tool, "-P", str(self.path), "-n", object_name, *args], check=check, timeout=timeout)

    # -- state -----------------------------------------------------------------
    def state(self, object_name: str) -> str:
        if not (self.folder(object_name) / CONFIG).is_file():
            return NOT_CREATED
        result = self.tool("lxc-info", object_name, "-s", "-H", check=False, timeout=30)
        running = result.stdout.strip() in ("RUNNING", "STARTING", "FROZEN", "FREEZING")
        if running and (self.folder(object_name) / FROZEN_MARK).exists():
            freezing.thaw_left_frozen(self, object_name)  # a snapshot's copy cut short (vbox was killed)
        return RUNNING if running else STOPPED

    def stats(self, object_name: str):
        from providers.stats import container_stats

        if self.state(object_name) != RUNNING:
            return None
        pid = int(self.tool("lxc-info", object_name, "-p", "-H").stdout.strip())
        folder = self.folder(object_name)
        found = container_stats(pid, object_name, None if user_map_lines(folder) else veth_name(object_name),
                                folder / UPPER)
        if usage := layer.disk_usage(self.folder(object_name)):  # its own disk: its size, what it holds
            found.disk_size, found.disk_used = usage
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
                with open(self.folder(name) / CONFIG) as f:
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
        from providers.host import check_lxcfs

        lxcfs = check_lxcfs()
        if not lxcfs.ok:  # without it a machine sees the host's memory and CPUs, not its own limits
            raise VboxError(f"{machine_name}: lxcfs: {lxcfs.detail}", hint="`env doctor --fix` starts it")
        if lxc_user.is_user():
            lxc_user.preflight(machine_name)

    def create(self, spec: MachineSpec) -> None:
        self.preflight(spec.machine.name)
        folder = self.folder(spec.object_name)
        if folder.exists():  # a creation cut short: it never got its config
            self.destroy(spec.object_name)
        lower = spec.box.artefact("rootfs")
        if lxc_user.is_user():
            lxc_user.create(spec, folder, lower)
            self._write_config(spec)  # last: a folder with a config is a complete machine
            return
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
            layer.make_disk(folder, spec.machine.disk)
        upper.mkdir(parents=True)
        if ids:
            os.chown(upper, *ids.shift(0, 0))
        layer.write_files(upper, lower, guest_files(spec), ids, lambda owner: user_ids(spec.box, owner), durable=False)
        for unit in masked_units(spec):
            layer.mask_unit(upper, lower, unit, ids)
        if ids:
            layer.mask_unit(upper, lower, "sys-kernel-debug.mount", ids)  # no debugfs in a user namespace
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

    def _write_config(self, spec: MachineSpec) -> None:
        from vbox_cli.files import atomic_write

        from providers import ovs

        folder = self.folder(spec.object_name)
        for old in folder.glob("ovs-*"):
            old.unlink()
        for i, net in enumerate(spec.networks, start=1):
            if net.kind == "ovs":
                atomic_write(folder / f"ovs-up-{i}", ovs.port_script(net.bridge, net.vlan), 0o700)
                atomic_write(folder / "ovs-down", ovs.down_script(), 0o700)
        atomic_write(folder / CONFIG, render_config(spec, folder), 0o600)

    def _write_network_files(self, spec: MachineSpec) -> None:
        layer.write_network_files(self.folder(spec.object_name), spec)

    def apply_resources(self, spec: MachineSpec) -> None:
        """Before a start: the config (cpus, memory, folders, networks) as the spec says."""
        layer.mount_disk(self.folder(spec.object_name))
        self._write_network_files(spec)
        self._write_config(spec)

    # -- live: resources and folders of a running container (providers/lxc_live.py) -----
    def change_live(self, spec: MachineSpec, was: dict):
        from providers.lxc_live import change_live

        return change_live(self, spec, was)

    def update_folders(self, spec: MachineSpec) -> str | None:
        from providers.lxc_live import update_folders

        return update_folders(self, spec)

    def start(self, spec: MachineSpec) -> None:
        from providers import idmap, lxc_unprivileged as unprivileged

        folder = self.folder(spec.object_name)
        if refused := self.refuses(spec.object_name, spec.machine):
            raise refused
        ids = machine_ids(folder)
        if spec.machine.disk_set:
            layer.fit_disk(folder, spec.machine.disk)  # a bigger disk that could not grow live
        layer.mount_disk(folder)  # a host restart unmounted it
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
            if user_map_lines(folder):  # lxc-start makes her machine's cgroups under its own
                from providers.users import user_name

                lxc_user.check_spec(spec, None)
                lxc_user.enter_cgroups(user_name())
            self._lxc_start(spec.object_name, folder)
        finally:
            idmap.release(folder / IDMAP)
            if ids:  # the container holds its own copy of the mounts: none stays on this host
                unprivileged.unmount_root(folder)

    def refuses(self, object_name: str, machine) -> VboxError | None:
        """A machine is privileged or not for its whole life (its layer's owners are ids of
        one or the other)."""
        folder = self.folder(object_name)
        ids = machine_ids(folder)
        if not (folder / CONFIG).is_file() or bool(ids) == machine.unprivileged:  # not made yet: it will be
            return None
        if user_map_lines(folder):  # a user's machines are all unprivileged, of her map
            return None
        return VboxError(f"{machine.name} was made {'unprivileged' if ids else 'privileged'}; unprivileged = "
                         f"{str(machine.unprivileged).lower()} takes effect when it is made anew",
                         hint=f"`env destroy {machine.name}` and `env up {machine.name}`")

    def _lxc_start(self, object_name: str, folder: Path) -> None:
        layer.mount_disk(folder)
        layer.settle(folder)
        if criu.restore(folder, self._lxc_checkpoint(object_name)):  # suspended: its processes restored
            return
        try:
            self.tool("lxc-start", object_name, "-o", str(folder / LXC_LOG), "-l", "WARN")
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
        self._drop_nic(object_name)
        if timeout <= 0:
            self.tool("lxc-stop", object_name, "-k", check=False)
            return False
        result = self.tool("lxc-stop", object_name, "-t", str(int(timeout)), check=False, timeout=timeout + 30)
        if result.returncode != 0 and self.state(object_name) == RUNNING:
            self.tool("lxc-stop", object_name, "-k", check=False)
            return False
        return True

    def destroy(self, object_name: str, network_going: bool = False) -> None:
        folder = self.folder(object_name)
        if (folder / CONFIG).is_file() and self.state(object_name) == RUNNING:
            self._drop_nic(object_name)
            self.tool("lxc-stop", object_name, "-k", check=False)
            deadline = time.monotonic() + 20
            while self.state(object_name) == RUNNING and time.monotonic() < deadline:
                time.sleep(0.1)
        remove_veths(object_name)  # before the container goes: a veth of no container is a leak
        layer.discard(folder)
        if os.geteuid() == 0 and not network_going:
            import libvirt

            from providers.network import remove_dhcp_host

            try:
                remove_dhcp_host(self.network_host.conn, mac_address(object_name))
            except (VboxError, libvirt.libvirtError):
                pass  # libvirt is down: the entry goes with the project network

    def _drop_nic(self, object_name: str) -> None:
        """A user's machine's veth, before it stops (lxc_user.drop_nic)."""
        if user_map_lines(self.folder(object_name)) and (pid := self.init_pid(object_name)) is not None:
            lxc_user.drop_nic(pid)

    def console_log(self, object_name: str) -> Path | None:
        return self.folder(object_name) / CONSOLE_LOG

    def console_command(self, object_name: str) -> list[str]:
        return ["lxc-console", "-P", str(self.path), "-n", object_name]

    # -- suspend: CRIU, through lxc-checkpoint (providers/lxc_criu.py) --------------------
    def suspend(self, object_name: str) -> None:
        criu.checkpoint(self.folder(object_name), self._lxc_checkpoint(object_name))

    def _lxc_checkpoint(self, object_name: str):
        return lambda *args: self.tool("lxc-checkpoint", object_name, *args, check=False, timeout=600)

    def suspended(self, object_name: str) -> bool:
        return criu.has_checkpoint(self.folder(object_name)) and self.state(object_name) != RUNNING

    # -- snapshots: copies of its layer (providers/lxc_layer.py) ------------------------
    def snapshots(self, object_name: str):
        return layer.snapshots(self.folder(object_name))

    def snapshot_save(self, object_name: str, name: str):
        return layer.save_snapshot(self.folder(object_name), name, lambda: freezing.frozen(self, object_name))

    def init_pid(self, object_name: str) -> int | None:
        result = self.tool("lxc-info", object_name, "-p", "-H", check=False, timeout=30)
        return int(result.stdout.strip()) if result.stdout.strip().isdigit() else None

    def snapshot_restore(self, object_name: str, name: str) -> None:
        if self.state(object_name) == RUNNING:
            raise VboxError(f"{object_name} is running: a snapshot is restored into a stopped container")
        layer.restore_snapshot(self.folder(object_name), name)

    def snapshot_delete(self, object_name: str, name: str) -> None:
        layer.delete_snapshot(self.folder(object_name), name)

    # -- leftovers (providers/lxc_host.py) -----------------------------------------
    def leaks(self, prefix: str) -> list[str]:
        from providers.lxc_host import leaks

        return leaks(self, prefix)
