"""What a provider is given, and what it must do.

A provider gets one machine's resolved settings, its box and the project context
(`MachineSpec`), and nothing else. One small required Protocol (`Provider`); optional
capabilities beside it (`SupportsResources`, `SupportsConsole`, ...), which an instance
declares through `unsupported(capability, spec)`: a provider may offer a capability
in one setting and not in another (a user's libvirt session, a remote host). Commands
call `require()` and get one clear error naming the provider and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from vbox_cli.errors import VboxError

NOT_CREATED = "not created"
STOPPED = "stopped"
RUNNING = "running"


@dataclass(frozen=True)
class Share:
    """A folder of the project the machine sees (a synced folder), resolved."""

    source: Path  # on this host, inside the project (symlinks resolved)
    target: str  # in the machine, absolute and normalised
    readonly: bool = False


MAX_NETWORKS = 8  # extra networks of one machine (`networks` in the Envfile)


@dataclass(frozen=True)
class Attachment:
    """A network the machine joins besides the project network, resolved."""

    kind: str  # "bridge" (a Linux bridge of this host) or "ovs" (an Open vSwitch bridge)
    bridge: str
    vlan: int | None  # ovs: the tag of the machine's port
    address: str  # "192.168.42.10/24"; "": DHCP
    mac: str


def extra_mac(object_name: str, index: int) -> str:
    """The MAC address of a machine's extra network `index` (1, 2, ...), the same every time."""
    import hashlib

    digest = hashlib.sha256(f"{object_name}#net{index}".encode()).digest()
    return "52:54:01:" + ":".join(f"{b:02x}" for b in digest[:3])


@dataclass(frozen=True)
class MachineSpec:
    """Everything a provider may know about one machine."""

    project_id: str
    object_name: str  # vbox-<project>-<machine>: every object the provider makes is named from it
    machine: Any  # vbox_cli.envfile.model.Machine (resolved settings)
    box: Any  # boxes.store.Box
    address: str  # the machine's static address on the project network ("" without one)
    gateway: str
    network: str  # the project's libvirt network
    bridge: str
    domain: str
    user: str  # the box's default user, who gets the project's key
    authorized_key: str  # the project's public key line
    host_key_private: str  # the machine's SSH host key (OpenSSH PEM), made by vbox; "" after creation
    host_key_public: str
    index: int  # the machine's position in the Envfile (spreads CPUs)
    console_log: Path  # where a provider that can choose writes the console (under .vbox/)
    folders: tuple[Share, ...] = ()  # synced folders (providers that have Capability.FOLDERS)
    folder_owner: tuple[int, int] = (0, 0)  # uid and gid of the project folder's owner
    networks: tuple[Attachment, ...] = ()  # extra networks (providers that have Capability.NETWORKS)


class NeedsRestart(VboxError):
    """A change of the Envfile that a running machine takes only when it starts again."""


class Capability(str, Enum):
    """Optional things a provider may do; each is a Protocol below."""

    RESOURCES = "change cpus and memory of a created machine"
    CONSOLE = "attach a terminal to the console"
    ACCEL = "choose a CPU accelerator"
    PREFLIGHT = "check the host before anything is made"
    PORTS = "forward ports of this host to the machine"
    FOLDERS = "share folders of the project with the machine"
    NETWORKS = "join networks besides the project network"
    STATS = "report what a machine uses"
    SNAPSHOTS = "save and restore snapshots of a machine's disk"
    LIVE = "change cpus, memory and disk of a running machine"
    SUSPEND = "suspend a machine to disk and resume it"
    MIGRATE = "move a machine to another host"


@runtime_checkable
class SupportsResources(Protocol):
    def apply_resources(self, spec: MachineSpec) -> None:
        """Bring cpus and memory of a created, stopped machine in line with the spec."""


@runtime_checkable
class SupportsConsole(Protocol):
    def console_command(self, object_name: str) -> list[str]:
        """A command line that attaches the terminal to the machine's console."""


@runtime_checkable
class SupportsAccel(Protocol):
    def accel_for(self, spec: MachineSpec) -> tuple[str, str]:
        """(accelerator, why): "kvm", "tcg", "xen", and how that was decided."""


@runtime_checkable
class SupportsPreflight(Protocol):
    def preflight(self, machine_name: str) -> None:
        """Raise a clear error, before anything is made, if this host or user cannot run it."""


@runtime_checkable
class SupportsPorts(Protocol):
    def forward_ports(self, project_id: str, machine: str, target: str, bridge: str, forwards: list) -> None:
        """Make the machine's forwards exactly these (providers/ports.py)."""

    def unforward_ports(self, project_id: str, machine: str) -> None:
        """Remove the machine's forwards."""


@runtime_checkable
class SupportsFolders(Protocol):
    def update_folders(self, spec: MachineSpec) -> str | None:
        """Make a running machine's synced folders those of the spec (a created, stopped
        one gets them at start); what was done, or None if nothing was to do. A provider
        that cannot change them live raises an error that says what to do."""


@runtime_checkable
class SupportsNetworks(Protocol):
    def joins_networks(self) -> bool:
        """Always True: the machines of this provider join the bridges of `spec.networks`
        (made before they start, by providers/ovs.py where vbox makes them)."""


@runtime_checkable
class SupportsStats(Protocol):
    def stats(self, object_name: str):
        """What the running machine uses (providers/stats.py MachineStats), read from the
        host; None when it is not running."""


@dataclass(frozen=True)
class Snapshot:
    """A saved state of a machine's disk (LXC: its overlay's upper layer; KVM: an internal
    snapshot of its qcow2 overlay). Disk only: no memory, no processes."""

    name: str
    created: float  # seconds since the epoch
    running: bool  # the machine was running when it was taken (file systems flushed first)


@dataclass
class LiveChange:
    """What a provider did to a running machine's resources, and what is left to do."""

    done: list[str]  # "memory 512M -> 768M"
    later: list[str]  # what takes a restart (`env reload`), each with why
    refused: list[str]  # what no restart applies either, each with what does
    guest: list[str]  # commands to run in the machine as root to finish (online new CPUs, grow a file system)
    applied: dict  # cpus / memory / disk -> the value the machine has now


@runtime_checkable
class SupportsLive(Protocol):
    def change_live(self, spec: MachineSpec, was: dict) -> LiveChange:
        """Give the running machine the spec's cpus, memory and disk where it can without
        a restart; `was`: the values it has (those that differ from the spec)."""


@runtime_checkable
class SupportsSuspend(Protocol):
    def suspend(self, object_name: str) -> None:
        """Save the running machine's memory and processes to disk and stop it (its host's
        memory freed); `start` resumes it from there. A clear error when it cannot."""

    def suspended(self, object_name: str) -> bool:
        """Whether the stopped machine was suspended (its next start resumes it)."""


@runtime_checkable
class SupportsMigrate(Protocol):
    def migrate(self, spec: MachineSpec, target: Any, target_spec: MachineSpec, cold: bool,
                progress: Any = None) -> Any:
        """Move the machine to the host of `target` (a provider instance of the same kind),
        where it joins the network of `target_spec`: live when it runs (unless `cold`: shut
        down, moved, started there), else its stopped disk and definition. Returns a
        providers.migration.Migration; nothing of it stays here once it succeeded, and it
        is left as it was where it is when it failed."""


SNAPSHOT_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}"  # a folder name (LXC), a libvirt snapshot name


def check_snapshot_name(name: str) -> str:
    import re

    if not re.fullmatch(SNAPSHOT_NAME, name):
        raise VboxError(f"{name!r} is not a snapshot name: letters, digits, '.', '_' and '-', starting with a "
                        "letter or digit, at most 63")
    return name


@runtime_checkable
class SupportsSnapshots(Protocol):
    def snapshots(self, object_name: str) -> list[Snapshot]:
        """The machine's snapshots, oldest first."""

    def snapshot_save(self, object_name: str, name: str) -> Snapshot:
        """Save the disk as snapshot `name` (new), the machine running or stopped; a running
        one is held still for the moment of the copy. Leaves nothing behind on failure."""

    def snapshot_restore(self, object_name: str, name: str) -> None:
        """Return the disk of the stopped machine to snapshot `name` (which stays)."""

    def snapshot_delete(self, object_name: str, name: str) -> None:
        """Remove snapshot `name`."""


_PROTOCOLS = {
    Capability.RESOURCES: SupportsResources,
    Capability.CONSOLE: SupportsConsole,
    Capability.ACCEL: SupportsAccel,
    Capability.PREFLIGHT: SupportsPreflight,
    Capability.PORTS: SupportsPorts,
    Capability.FOLDERS: SupportsFolders,
    Capability.NETWORKS: SupportsNetworks,
    Capability.STATS: SupportsStats,
    Capability.SNAPSHOTS: SupportsSnapshots,
    Capability.LIVE: SupportsLive,
    Capability.SUSPEND: SupportsSuspend,
    Capability.MIGRATE: SupportsMigrate,
}


class NetworkHost(Protocol):
    """The host that holds a machine's project network (providers/hosts.py)."""

    key: str  # "local", or the remote host's short name
    remote: bool
    shown: str

    def plan_network(self, project, avoid: tuple[str, ...] = ()) -> Any: ...
    def ensure_network(self, plan, dns: dict[str, str]) -> None: ...
    def remove_network(self, project_id: str) -> bool: ...
    def close(self) -> None: ...


@runtime_checkable
class Provider(Protocol):
    name: str
    label: str  # how messages name its machines: "KVM machine"

    @property
    def network_host(self) -> NetworkHost | None:
        """The host whose project network the machines join; None: no project network
        (a user's libvirt session: user-mode networking)."""

    def unsupported(self, capability: Capability, spec: MachineSpec | None = None) -> str | None:
        """Why this instance cannot do `capability` (for this machine), or None if it can."""

    def ssh_endpoint(self, object_name: str, address: str) -> tuple[str, int]:
        """Where SSH to the machine is reached: (host, port). `address` is its address on the
        project network, if it has one."""

    def state(self, object_name: str) -> str:
        """NOT_CREATED, STOPPED or RUNNING, asked of the hypervisor every time."""

    def create(self, spec: MachineSpec) -> None:
        """Make the machine, stopped. MUST leave either a complete machine or, after a
        failure, something `destroy` removes. Called on a machine that a creation cut
        short, it MUST remove what is there first."""

    def start(self, spec: MachineSpec) -> str | None:
        """Start a created machine; returns once it is booting, with a line for the user on
        how it started where that is worth saying (a KVM machine started warm), or None."""

    def halt(self, object_name: str, timeout: float) -> bool:
        """Shut down cleanly within timeout, else power off; True if it was clean. A
        timeout of 0 powers off at once (False). MUST succeed on a stopped machine."""

    def destroy(self, object_name: str, network_going: bool = False) -> None:
        """Remove every trace of the machine. MUST succeed when nothing is there.
        `network_going`: the project network it joined is removed too (`env destroy` of the
        whole project): what the machine has in it (a DHCP reservation) need not be
        removed first."""

    def console_log(self, object_name: str) -> Path | None:
        """Where the machine's console output is written, if anywhere."""

    def objects(self, prefix: str) -> list[str]:
        """Names of the machines this provider holds whose name starts with prefix."""

    def owned(self, project_id: str) -> dict[str, str]:
        """machine name -> object name of the machines that belong to this project, matched
        exactly by what vbox wrote into each (never by a name prefix)."""

    def leaks(self, prefix: str) -> list[str]:
        """Anything left on the host for objects named with prefix (mounts, links, processes)."""


class ProviderBase:
    """What every provider shares: a capability is offered when the instance implements
    its Protocol; a subclass narrows that with `_unsupported` for its own reasons."""

    name = ""
    label = ""
    needs: tuple[str, ...] = ()  # the box artefacts its machines boot from ("rootfs", "disk", "kernel", ...)
    def folder_event_source(self, object_name: str) -> str | None:
        """None: a change made on this host to a synced folder reaches inotify in the
        machine by itself (LXC's bind mounts). Else vbox forwards them (vbox_cli/folderwatch.py),
        and this is what the command line of the processes that serve the machine's
        folders has (the machine's own changes come through them: not sent back)."""
        return None

    def why_stopped(self, object_name: str) -> str:
        """What the hypervisor says of why the machine is not running (a domain's shut-off
        reason); "" when it says nothing."""
        return ""

    def refuses(self, object_name: str, machine) -> VboxError | None:
        """Why the machine that exists cannot start with these settings (`machine`: the
        resolved Envfile settings), before anything stops it; None when it can."""
        return None

    def unsupported(self, capability: Capability, spec: MachineSpec | None = None) -> str | None:
        if not isinstance(self, _PROTOCOLS[capability]):
            from providers.registry import lacks

            return lacks(self.name, capability.name.lower()) or f"the {self.name} provider does not offer it"
        return self._unsupported(capability, spec)

    def _unsupported(self, capability: Capability, spec: MachineSpec | None) -> str | None:
        return None


def a(label: str) -> str:
    """The label with its article, as it is said: "an LXC container", "a KVM machine"."""
    return f"{'an' if label[:1].lower() in 'aeiou' or label.startswith('LXC') else 'a'} {label}"


def require(provider, capability: Capability, machine: str, spec: MachineSpec | None = None):
    """The provider, if it can do `capability` for `machine`; else one clear error."""
    reason = provider.unsupported(capability, spec)
    if reason:
        raise VboxError(f"{machine}: {a(provider.label)} cannot {capability.value}: {reason}")
    return provider


def supports(provider, capability: Capability, spec: MachineSpec | None = None) -> bool:
    return provider.unsupported(capability, spec) is None
