"""One command's view of a project: the Envfile, the state, where each machine lives,
and where the command reports (an EventStream). The core reports; it never prints."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Callable

from vbox_cli.errors import UsageError, VboxError
from vbox_cli.events import EventStream


def _wait_for_ssh(target, timeout: float, console_log: Path | None, stopped=None):
    from provisioners.ssh import wait_for_ssh

    return wait_for_ssh(target, timeout, console_log, stopped)


def _stopped(provider, object_name: str):
    """Why the machine no longer runs, for the SSH wait; None while it runs, or while its
    hypervisor cannot be asked (libvirtd restarting: the wait goes on)."""
    from providers.base import RUNNING

    def why() -> str | None:
        try:
            state = provider.state(object_name)
            if state == RUNNING:
                return None
            return provider.why_stopped(object_name) or f"it is {state}"
        except Exception:  # noqa: BLE001 - a hypervisor that does not answer now may later
            return None

    return why


@dataclass
class Session:
    project: object  # vbox_cli.project.Project
    loaded: object  # vbox_cli.envfile.load.LoadedEnvfile
    events: EventStream = field(default_factory=EventStream)
    accel: str | None = None  # --accel: overrides the Envfile's accel for this command
    # how the core reaches a machine over SSH: (Target, timeout, console log) -> Connection;
    # None: OpenSSH's protocol through paramiko (provisioners/ssh.py)
    connector: Callable | None = None
    box_store: object = None  # boxes.store.BoxStore; the user's store unless given
    created: set = field(default_factory=set)  # machines this command made (up --abort-on-error undoes them)
    _said_no_folders: set = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self.project.load_state()  # a state vbox cannot read stops the command before anything is done

    @property
    def machines(self) -> dict:
        return self.loaded.machines

    @cached_property
    def placements(self):
        from vbox_cli.machines.placement import Placements

        return Placements(self.project, self.machines)

    @cached_property
    def store(self):
        if self.box_store is not None:
            return self.box_store
        from boxes.store import BoxStore

        return BoxStore()

    def select(self, names: list[str], autostart_only: bool = False) -> list[str]:
        unknown = [n for n in names if n not in self.machines]
        if unknown:
            raise UsageError(f"no machine named {', '.join(map(repr, unknown))} in {self.loaded.path}",
                             hint="machines: " + ", ".join(self.machines))
        if names:
            return names
        return [n for n, m in self.machines.items() if m.autostart or not autostart_only]

    def provider(self, name: str):
        return self.placements.provider(name)

    def connect(self, name: str):
        """An SSH connection to a machine, waiting for it up to its boot_timeout."""
        provider, obj = self.provider(name), self.project.object_name(name)
        log = provider.console_log(obj)
        try:
            if self.connector is not None:
                return self.connector(self.ssh_target(name), self.machines[name].boot_timeout, log)
            return _wait_for_ssh(self.ssh_target(name), self.machines[name].boot_timeout, log, _stopped(provider, obj))
        except VboxError as exc:
            record = self.project.machine_state(name)
            box = self.store.find(record.get("box", ""), record.get("box_version"))
            if box is None or box.meta.recipe or self.machines[name].provider not in ("kvm", "xen"):
                raise
            # a box vbox did not build: the likely reason is that it never took its identity
            raise VboxError(exc.message, details=exc.details, hint=(
                f"its box {box.name} is not one vbox built: a VM gets its SSH keys through a systemd credential, "
                "which systemd 252 and later read (Debian 12, Ubuntu 23.04, Fedora 38); an older box keeps "
                "its own keys. " + (exc.hint or ""))) from None

    def made_from(self, name: str, default=None):
        """The box a created machine was made from (its record): it keeps it, a newer
        version in the store is for new machines (a container's root is an overlay on that
        box's tree). `default` when the record names none (an older vbox's) or the store
        lacks it."""
        record = self.project.machine_state(name)
        if not record.get("box") or not record.get("box_version"):
            if default is not None:
                return default
            raise VboxError(f"{name}: vbox has no record of the box it was made from",
                            hint=f"`env destroy {name}` then `env up {name}`")
        box = self.store.find(record["box"], record["box_version"])
        if box is None and default is not None:  # removed with `box remove --force`: a VM's disk has its base
            return default
        if box is None:
            raise VboxError(f"{name}: it was made from the box {record['box']} {record['box_version']}, which is no "
                            "longer in the box store", hint=f"`env destroy {name}` then `env up {name}` makes it "
                                                             "from a box the store has")
        return box

    # -- a machine's spec and SSH target -----------------------------------------
    def spec(self, name: str, box, address: str, host_key: tuple[str, str] | None = None):
        from providers.base import MachineSpec

        net = self.placements.network(name)
        record = self.project.machine_state(name)
        machine = self.machines[name]
        if self.accel:
            machine = machine.model_copy(update={"accel": self.accel})
        spec = MachineSpec(
            project_id=self.project.id, object_name=self.project.object_name(name), machine=machine,
            box=box, address=address, gateway=net.gateway if net else "", network=net.name if net else "",
            bridge=net.bridge if net else "", domain=net.domain if net else "",
            user=box.meta.user, authorized_key=self.project.ensure_client_key(),
            host_key_private=host_key[0] if host_key else "",
            host_key_public=host_key[1] if host_key else record.get("host_key", ""),
            index=list(self.machines).index(name), console_log=self.project.console_log(name),
            folder_owner=self._folder_owner(),
        )
        return replace(spec, folders=self.shares(name, spec), networks=self.attachments(name, spec))

    def attachments(self, name: str, spec) -> tuple:
        """The machine's extra networks (validate refused them where its provider cannot)."""
        from providers.base import Attachment, Capability, extra_mac

        machine = self.machines[name]
        if not machine.networks:
            return ()
        reason = self.provider(name).unsupported(Capability.NETWORKS, spec)
        if reason:
            raise VboxError(f"{name}: extra networks are not supported for this machine, because {reason}",
                            hint="remove its `networks`")
        return tuple(Attachment("ovs" if net.ovs else "bridge", net.ovs or net.bridge, net.vlan, net.address or "",
                                extra_mac(spec.object_name, i)) for i, net in enumerate(machine.networks, start=1))

    def shares(self, name: str, spec=None) -> tuple:
        """The machine's synced folders, resolved inside the project; none where its provider
        (or its box, in `spec`) cannot have them (validate refused explicit ones where the
        provider cannot: this is the default folder, or a box that cannot mount them)."""
        from providers.base import Capability, Share
        from vbox_cli.files import project_file

        machine = self.machines[name]
        reason = self.provider(name).unsupported(Capability.FOLDERS, spec)
        if reason:
            if machine.folders and machine.folders_set:
                raise VboxError(f"{name}: synced folders are not supported for this machine, because {reason}",
                                hint="set folders = [] for it")
            if machine.folders and name not in self._said_no_folders:
                self._said_no_folders.add(name)
                self.events.note(f"{name}: no synced folder, because {reason}", name)
            return ()
        shares = []
        for folder in machine.folders:
            try:
                source = project_file(self.loaded.project_dir, folder.host)
            except ValueError as exc:
                raise VboxError(f"{name}: folders: {exc}") from None
            target = "/" + "/".join(part for part in folder.guest.split("/") if part not in ("", "."))
            shares.append(Share(source, target, folder.readonly))
        return tuple(shares)

    def _folder_owner(self) -> tuple[int, int]:
        info = os.stat(self.loaded.project_dir)
        return info.st_uid, info.st_gid

    def ssh_target(self, name: str):
        from provisioners.ssh import Target

        record = self.project.machine_state(name)
        if not record.get("host_key") or not record.get("address"):
            raise VboxError(f"{name}: vbox has no record of this machine's address and host key",
                            hint=f"`env destroy {name}` then `env up {name}`")
        return Target(name=name, host=record["address"], port=record.get("port", 22),
                      user=record.get("user", "vbox"), client_key=self.project.client_key,
                      host_key=record["host_key"], via=self._via(name))

    def _via(self, name: str):
        """SSH to a guest of a remote host goes through that host."""
        from provisioners.ssh import Target

        access = self.placements[name].access
        if access is None or not access.remote:
            return None
        if access.machine:
            return self.ssh_target(access.machine)
        return Target(name=access.ssh_host, host=access.ssh_host, port=access.ssh_port,
                      user=access.ssh_user or "", client_key=Path(access.key_file) if access.key_file else None,
                      host_key="", known_hosts=Path(access.known_hosts) if access.known_hosts else None)
