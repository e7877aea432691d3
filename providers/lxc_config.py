"""What an LXC machine's folder holds besides its upper layer: its LXC config (network,
cgroup limits, synced folders as mount entries, extra networks), and the files vbox
writes into the machine (identity, networkd's settings). Pure functions of the spec;
the provider (providers/lxc.py) writes them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from providers.base import MachineSpec
from providers.idmap import folder_maps

CONFIG = "config"
UPPER = "delta/upper"
CONSOLE_LOG = "console.log"
IDMAP = "idmap"  # the user namespace of the synced folders' idmapped mounts (providers/idmap.py)
VETH_PREFIX = "vbv-"
IDS = "ids"  # an unprivileged machine's id range (providers/subids.py), chosen when it is made
ROOTFS = "rootfs"  # an unprivileged machine's overlay, mounted there by vbox only while LXC starts it
LOWER = "lower"  # the box's tree under it, its owners mapped into the machine's range
SHARES = "shares"  # an unprivileged machine's synced folders, there while LXC starts it (staged())


def machine_ids(folder: Path):
    """The id range of the machine in `folder` if it is unprivileged (an IdRange), else None."""
    from providers.subids import IdRange

    try:
        return IdRange.parse((folder / IDS).read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        from vbox_cli.errors import VboxError

        raise VboxError(f"{folder / IDS}: {exc}", hint="`env destroy` and `env up` make the machine anew") from None


def user_map_lines(folder: Path) -> list[str]:
    """A normal user's machine's id map (providers/lxc_user.py), as lxc.idmap lines; [] for root's."""
    from providers.lxc_user import USERMAP

    try:
        return (folder / USERMAP).read_text().splitlines()
    except FileNotFoundError:
        return []


def veth_name(object_name: str, index: int = 0) -> str:
    """The host side of a machine's veth: 0 on the project network, 1... its extra networks."""
    key = object_name if index == 0 else f"{object_name}#net{index}"
    return VETH_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:10]


def network_entries(spec: MachineSpec, folder: Path) -> list[dict]:
    """The machine's extra networks as the config template takes them: a Linux bridge is
    LXC's own link; an Open vSwitch bridge is joined by the scripts `_write_config`
    puts in the machine's folder (LXC has no VLAN tags for Open vSwitch ports)."""
    return [{"index": i, "mac": net.mac, "veth": veth_name(spec.object_name, i), "address": with_broadcast(net.address) if net.address else "",
             "link": net.bridge if net.kind == "bridge" else "",
             "up": folder / f"ovs-up-{i}", "down": folder / "ovs-down"}
            for i, net in enumerate(spec.networks, start=1)]


def with_broadcast(address: str) -> str:
    """An address with its prefix, as LXC takes it, with its broadcast address: LXC 5.0
    works out 0.0.0.255 for 10.103.6.2/24 by itself."""
    import ipaddress

    return f"{address} {ipaddress.ip_interface(address).network.broadcast_address}"


def network_files(spec: MachineSpec) -> dict[str, tuple[str, int, str]]:
    """networkd's settings of the extra networks, in the machine: a static address, or DHCP."""
    files = {}
    for i, net in enumerate(spec.networks, start=1):
        body = f"Address={net.address}\n" if net.address else "DHCP=yes\n"
        files[f"etc/systemd/network/11-vbox-net{i}.network"] = (
            f"# written by vbox at every start\n[Match]\nMACAddress={net.mac}\n\n[Network]\n{body}", 0o644, "root")
    return files


def mac_address(object_name: str) -> str:
    digest = hashlib.sha256(object_name.encode()).digest()
    return "00:16:3e:" + ":".join(f"{b:02x}" for b in digest[:3])


def cgroup_keys() -> tuple[str, str]:
    """The config keys for memory and cpuset on this host's cgroup layout."""
    memory = "cgroup.memory.limit_in_bytes" if os.path.isdir("/sys/fs/cgroup/memory") else "cgroup2.memory.max"
    cpuset = "cgroup.cpuset.cpus" if os.path.isdir("/sys/fs/cgroup/cpuset") else "cgroup2.cpuset.cpus"
    return memory, cpuset


LIBVIRT_HOST_FEATURE = "libvirt-host"  # a box's feature: it runs libvirtd and QEMU guests
TUN = "c 10:200 rwm"  # /dev/net/tun: the network ports of a libvirt host's guests


def devices(spec: MachineSpec) -> list[str]:
    """Devices the machine may use besides LXC's usual ones (common.conf): a libvirt host
    box's guests need the TUN device. It makes interfaces in the machine's own network
    namespace only. Not /dev/kvm: its guests run under TCG (where nested KVM works is a
    question for the host that this tool does not ask)."""
    return [TUN] if LIBVIRT_HOST_FEATURE in spec.box.meta.features else []


def devices_key() -> str:
    return "cgroup.devices.allow" if os.path.isdir("/sys/fs/cgroup/devices") else "cgroup2.devices.allow"


def cpuset(cpus: int, index: int, host_cpus: int) -> str:
    """`cpus` host CPUs for the machine, starting at a place that spreads machines out."""
    count = min(cpus, host_cpus)
    first = (index * count) % host_cpus
    chosen = sorted({(first + i) % host_cpus for i in range(count)})
    return ",".join(str(c) for c in chosen)


def fstab_escape(text: str) -> str:
    """A path in a mount entry: white space, backslash and control characters as octal."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" or ord(c) < 32 else c for c in text)


def fstab_unescape(text: str) -> str:
    import re

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), text)


def staged(folder: Path, source: Path) -> Path:
    """Where an unprivileged machine's synced folder is bind-mounted while LXC starts it:
    LXC makes the folders' mounts as the machine's root, which may not pass through the
    folders above the project (a home folder of mode 0700); through the machine's folder
    it can. Named by the source, so that a changed folder is a changed mount entry."""
    return folder / SHARES / hashlib.sha256(str(source).encode()).hexdigest()[:16]


def mount_entries(spec: MachineSpec, folder: Path, idmapped: bool, stage: bool = False) -> list[str]:
    """The synced folders as LXC mount entries: bind mounts, idmapped where the project
    folder's owner is not the machine's user; from their staged places (`stage`) for an
    unprivileged machine."""
    entries = []
    for share in spec.folders:
        options = "bind,create=dir" + (",ro" if share.readonly else "")
        if idmapped:
            options += f",idmap={fstab_escape(str(folder / IDMAP))}"
        source = staged(folder, share.source) if stage else share.source
        entries.append(f"{fstab_escape(str(source))} {fstab_escape(share.target.lstrip('/'))} none {options} 0 0")
    return entries


def folder_ids_maps(spec: MachineSpec, folder: Path) -> tuple[str, str]:
    """The synced folders' maps of the machine in `folder`, for its own id range. None for
    a user's machine: its user is her own uid already (and she cannot make idmapped mounts)."""
    if user_map_lines(folder):
        return "", ""
    ids = machine_ids(folder)
    return folder_maps(spec, (ids.uid, ids.gid) if ids else (0, 0))


def render_config(spec: MachineSpec, folder: Path) -> str:
    from providers.render import render

    memory_key, cpuset_key = cgroup_keys()
    return render(
        "lxc.conf.j2",
        object_name=spec.object_name,
        project=spec.project_id,
        machine=spec.machine.name,
        hostname=spec.machine.hostname.split(".")[0],
        lower=spec.box.artefact("rootfs"),
        upper=folder / UPPER,
        ids=machine_ids(folder),
        user_map=user_map_lines(folder),
        rootfs=folder / ROOTFS,
        bridge=spec.bridge,
        mac=mac_address(spec.object_name),
        veth=veth_name(spec.object_name),
        address=with_broadcast(f"{spec.address}/24"),
        gateway=spec.gateway,
        cgroup_memory=memory_key,
        memory=spec.machine.memory,
        cgroup_cpuset=cpuset_key,
        devices_key=devices_key(),
        devices=devices(spec),
        cpuset=cpuset(spec.machine.cpus, spec.index, os.cpu_count() or 1),
        console_log=folder / CONSOLE_LOG,
        mounts=mount_entries(spec, folder, idmapped=bool(folder_ids_maps(spec, folder)[0]),
                             stage=machine_ids(folder) is not None),
        networks=network_entries(spec, folder),
    )


def guest_files(spec: MachineSpec) -> dict[str, tuple[str, int, str]]:
    """Files written into a new machine's upper layer: path -> (content, mode, owner)."""
    from providers.guest import identity_files

    return {
        **{path.lstrip("/"): entry for path, entry in identity_files(spec).items()},
        # no block device holds the root of a container: nothing to remount
        "etc/fstab": ("# the root of an LXC machine is an overlay set up by LXC\n", 0o644, "root"),
        **{path: (content, 0o644, "root") for path, content in
           address_files(spec.address, spec.gateway, spec.domain, bool(spec.box.meta.recipe)).items()},
    }


def address_files(address: str, gateway: str, domain: str, own_resolver: bool) -> dict[str, str]:
    """The machine's address on the network of the host it runs on: static (set by LXC at
    start here, by networkd where libvirt's LXC driver runs it) and, in a box vbox built
    (`own_resolver`), the resolver: that network's DNS in /etc/resolv.conf, for
    systemd-resolved, which the machine does not start (masked_units): it was on every
    boot's way to sshd, 0.1 to 0.4 s of an LXC machine's 0.5 to 1 s boot here."""
    files = {"etc/systemd/network/10-vbox.network":
             f"[Match]\nName=eth0\n\n[Network]\nAddress={address}/24\nGateway={gateway}\n"
             f"DNS={gateway}\nDomains={domain}\n"}
    if own_resolver:
        from providers.guest import resolver_conf

        files["etc/resolv.conf"] = resolver_conf(gateway, domain)
    return files


# networkd in an LXC machine: LXC sets its addresses (eth0's, a static extra network's) and
# its route before its init starts, and networkd only set them again while sshd waited for
# it (network.target): 80 ms of a 0.5 s boot to sshd here. It runs where a network of the
# machine asks DHCP, and where the machine moves to libvirt's LXC driver (lxc_move), which
# sets no address.
NETWORKD_UNITS = ("systemd-networkd.service", "systemd-networkd.socket", "systemd-networkd-wait-online.service")


def masked_units(spec: MachineSpec) -> tuple[str, ...]:
    """Units of the box a machine does not start, in a box vbox built: systemd-resolved (its
    resolver is /etc/resolv.conf, address_files), and networkd unless a network asks DHCP
    (NETWORKD_UNITS; decided again at every start, as its networks may change)."""
    if not spec.box.meta.recipe:
        return ()
    return ("systemd-resolved.service", *(() if any(not net.address for net in spec.networks) else NETWORKD_UNITS))
