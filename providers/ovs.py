"""The bridges that machines join besides the project network (`networks` in the Envfile).

A Linux bridge must exist already: vbox never makes or removes one. An Open vSwitch
bridge named "vbox-..." is made by vbox when it is missing, marked as vbox's in its
own record (external-ids:vbox-made=true), and removed by `destroy` once no port is left
on it; any other bridge must exist, and vbox never removes a bridge it did not make.
Where the kernel has no openvswitch module, vbox's bridges use Open vSwitch's userspace
datapath (datapath_type=netdev): slower, but VLAN tags work the same. Every name here was
checked as an interface name by the Envfile model, and goes in argv lists.
"""

from __future__ import annotations

import os
import shutil

from vbox_cli.errors import VboxError

VSCTL = "ovs-vsctl"
MADE_KEY = "vbox-made"
PREFIX = "vbox-"


def _vsctl(*args: str, check: bool = True):
    from vbox_cli import proc

    return proc.run([VSCTL, "--timeout=10", *args], check=check)


def unavailable() -> str | None:
    """Why Open vSwitch cannot be used here, or None."""
    from vbox_cli import proc

    if not shutil.which(VSCTL):
        return "Open vSwitch is not installed (`env doctor --fix` installs openvswitch-switch)"
    if proc.run([VSCTL, "--timeout=5", "show"], check=False).returncode != 0:
        return "Open vSwitch is not running (ovsdb-server, ovs-vswitchd): `env doctor --fix` starts it"
    return None


def linux_bridge_exists(name: str) -> bool:
    return os.path.isdir(f"/sys/class/net/{name}/bridge")


def exists(bridge: str) -> bool:
    return _vsctl("br-exists", bridge, check=False).returncode == 0


def check(kind: str, bridge: str, machine: str) -> None:
    """Before anything is made: the bridge is there, or vbox may make it."""
    if kind == "bridge":
        if not linux_bridge_exists(bridge):
            raise VboxError(f"{machine}: there is no bridge {bridge!r} on this host",
                            hint="networks: bridge = names an existing Linux bridge (`ip link show type bridge`)")
        return
    if why := unavailable():
        raise VboxError(f"{machine}: cannot join the Open vSwitch bridge {bridge}: {why}")
    if not bridge.startswith(PREFIX) and not exists(bridge):
        raise VboxError(f"{machine}: there is no Open vSwitch bridge {bridge!r} on this host",
                        hint=f"make it (`ovs-vsctl add-br {bridge}`), or name one {PREFIX}... that vbox makes")


def ensure(bridge: str) -> bool:
    """An Open vSwitch bridge of that name, up; True if vbox made it now."""
    from vbox_cli import proc

    if exists(bridge):
        return False
    datapath = "system" if os.path.isdir("/sys/module/openvswitch") else "netdev"
    _vsctl("--may-exist", "add-br", bridge, "--", "set", "bridge", bridge, f"datapath_type={datapath}",
           f"external-ids:{MADE_KEY}=true")
    proc.run(["ip", "link", "set", bridge, "up"], check=False)
    return True


def made_by_vbox(bridge: str) -> bool:
    out = _vsctl("br-get-external-id", bridge, MADE_KEY, check=False)
    return out.returncode == 0 and out.stdout.strip() == "true"


def ports(bridge: str) -> list[str]:
    return _vsctl("list-ports", bridge).stdout.split()


def remove_unused(bridges: set[str]) -> list[str]:
    """vbox's bridges among these that no port is left on, removed; their names."""
    if not bridges or unavailable():
        return []
    removed = []
    for bridge in sorted(bridges):
        if exists(bridge) and made_by_vbox(bridge) and not ports(bridge):
            _vsctl("--if-exists", "del-br", bridge)
            removed.append(bridge)
    return removed


def leaks() -> list[str]:
    """vbox's Open vSwitch bridges with no port left (what `destroy` should have removed)."""
    if not shutil.which(VSCTL) or unavailable():
        return []
    found = []
    for bridge in _vsctl("list-br").stdout.split():
        if made_by_vbox(bridge) and not ports(bridge):
            found.append(f"Open vSwitch bridge {bridge} (made by vbox, no port left)")
    return found


def port_script(bridge: str, vlan: int | None) -> str:
    """LXC's script.up of a veth on an Open vSwitch bridge (LXC runs it at every start,
    with the host side's name as 5th argument); the port goes with the container's stop."""
    tag = f" tag={vlan}" if vlan else ""
    return ("#!/bin/sh\n# vbox: this machine's veth on its Open vSwitch bridge, at every start (written by vbox)\n"
            f'exec {VSCTL} --timeout=10 -- --if-exists del-port "$5" -- add-port {bridge} "$5"{tag}\n')


def down_script() -> str:
    return ("#!/bin/sh\n# vbox: the veth's port off its Open vSwitch bridge (written by vbox)\n"
            f'exec {VSCTL} --timeout=10 --if-exists del-port "$5"\n')
