"""What a provider is given, and what it must do.

A provider gets one machine's resolved settings, its box and the project context
(`MachineSpec`), and nothing else. Commands check the optional capability protocols
(`isinstance(provider, SupportsConsole)`) and say clearly when one is absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

NOT_CREATED = "not created"
STOPPED = "stopped"
RUNNING = "running"


@dataclass(frozen=True)
class MachineSpec:
    """Everything a provider may know about one machine."""

    project_id: str
    object_name: str  # vbox-<project>-<machine>: every object the provider makes is named from it
    machine: Any  # vbox_cli.envfile.model.Machine (resolved settings)
    box: Any  # boxes.store.Box
    address: str  # the machine's static address on the project network
    gateway: str
    network: str  # the project's libvirt network
    bridge: str
    domain: str
    user: str  # the box's default user, who gets the project's key
    authorized_key: str  # the project's public key line
    host_key_private: str  # the machine's SSH host key (OpenSSH PEM), made by vbox
    host_key_public: str
    index: int  # the machine's position in the Envfile (spreads CPUs)
    console_log: Path  # where a provider that can choose writes the console (under .vbox/)


@runtime_checkable
class SupportsAccel(Protocol):
    def accel_for(self, spec: MachineSpec) -> tuple[str, str]:
        """(accelerator, why): "kvm" or "tcg", and how that was decided."""


@runtime_checkable
class SupportsPreflight(Protocol):
    def preflight(self, machine_name: str) -> None:
        """Raise a clear error, before anything is made, if this host or user cannot run it."""


@runtime_checkable
class SupportsConsole(Protocol):
    def console_command(self, object_name: str) -> list[str]:
        """A command line that attaches the terminal to the machine's console."""


@runtime_checkable
class Provider(Protocol):
    name: str
    uses_project_network: bool  # machines join the project's libvirt network

    def ssh_endpoint(self, object_name: str, address: str) -> tuple[str, int]:
        """Where SSH to the machine is reached: (host, port). `address` is its address on the
        project network, if it has one."""

    def state(self, object_name: str) -> str:
        """NOT_CREATED, STOPPED or RUNNING, asked of the hypervisor every time."""

    def create(self, spec: MachineSpec) -> None:
        """Make the machine, stopped. MUST leave either a complete machine or, after a
        failure, something `destroy` removes; MUST NOT be called on an existing one."""

    def start(self, spec: MachineSpec) -> None:
        """Start a created machine; returns once it is booting."""

    def apply_resources(self, spec: MachineSpec) -> None:
        """Bring cpus and memory of a created, stopped machine in line with the spec."""

    def halt(self, object_name: str, timeout: float) -> bool:
        """Shut down cleanly within timeout, else power off; True if it was clean.
        MUST succeed on a stopped machine."""

    def destroy(self, object_name: str) -> None:
        """Remove every trace of the machine. MUST succeed when nothing is there."""

    def console_log(self, object_name: str) -> Path | None:
        """Where the machine's console output is written, if anywhere."""

    def objects(self, prefix: str) -> list[str]:
        """Names of the machines this provider holds whose name starts with prefix."""

    def leaks(self, prefix: str) -> list[str]:
        """Anything left on the host for objects named with prefix (mounts, links, processes)."""
