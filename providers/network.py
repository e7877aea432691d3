"""The project network: one libvirt network per project, shared by all its machines.

A bridge with spanning tree off (a new port forwards at once), NAT to the outside,
DHCP and DNS by libvirt's dnsmasq. Each machine gets a stable address chosen by vbox
(from .2 to .99 of the project's /24; DHCP hands out .100 to .254) and a DNS entry,
so machines reach each other by name.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from providers.render import render
from vbox_cli.errors import VboxError

FIRST_STATIC, LAST_STATIC = 2, 99
POOL = ipaddress.ip_network("10.100.0.0/14")  # 10.100.0.0 - 10.103.255.255: 1024 /24s


@dataclass(frozen=True)
class NetworkPlan:
    name: str
    bridge: str
    subnet: str  # "10.101.7.0/24"
    domain: str

    @property
    def gateway(self) -> str:
        return str(ipaddress.ip_network(self.subnet)[1])

    def address(self, index: int) -> str:
        return str(ipaddress.ip_network(self.subnet)[index])

    def xml(self, hosts: dict[str, str]) -> str:
        net = ipaddress.ip_network(self.subnet)
        return render(
            "network.xml.j2", name=self.name, bridge=self.bridge, domain=self.domain, gateway=self.gateway,
            dhcp_start=str(net[100]), dhcp_end=str(net[254]),
            hosts=[{"name": n, "ip": ip} for n, ip in sorted(hosts.items())],
        )


def network_name(project_id: str) -> str:
    return f"vbox-{project_id}"


def bridge_name(project_id: str) -> str:
    # Interface names are at most 15 characters: "vbx-" and 8 hex of the id.
    return "vbx-" + hashlib.sha256(project_id.encode()).hexdigest()[:8]


def used_subnets(conn) -> list[ipaddress.IPv4Network]:
    """Subnets on the host's interfaces and routes, and those of every libvirt network."""
    from vbox_cli import proc

    used = []
    for argv in (["ip", "-j", "-4", "addr"], ["ip", "-j", "-4", "route", "show", "table", "all"]):
        try:
            data = json.loads(proc.run(argv, check=False, timeout=10).stdout or "[]")
        except (VboxError, ValueError):
            continue
        for item in data:
            for info in item.get("addr_info", []):
                used.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False))
            dst = item.get("dst")
            if dst and dst != "default":
                try:
                    used.append(ipaddress.ip_network(dst, strict=False))
                except ValueError:
                    pass
    for xml in _networks(conn):
        for ip in xml.findall("ip"):
            address, prefix = ip.get("address"), ip.get("prefix") or ip.get("netmask")
            if address and prefix and ":" not in address:
                used.append(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
    return used


def choose_subnet(project_id: str, used: list[ipaddress.IPv4Network]) -> str:
    candidates = list(POOL.subnets(new_prefix=24))
    start = int(hashlib.sha256(project_id.encode()).hexdigest(), 16) % len(candidates)
    for i in range(len(candidates)):
        subnet = candidates[(start + i) % len(candidates)]
        if not any(subnet.overlaps(other) for other in used):
            return str(subnet)
    raise VboxError(f"no free /24 left in {POOL} for the project network",
                    hint="destroy the machines of projects you no longer use")


def plan(project, conn, host_key: str = "local", avoid: tuple[str, ...] = ()) -> NetworkPlan:
    """The project's network on the host `conn` reaches, with its subnet chosen once and
    kept in the project's state: this host's under "network", another host's under
    "network.hosts.KEY" (clear of that host's networks and of `avoid`: the remote host may
    itself sit on this host's project network)."""
    def record(state: dict) -> dict:
        network = state.setdefault("network", {})
        return network if host_key == "local" else network.setdefault("hosts", {}).setdefault(host_key, {})

    subnet = record(project.load_state()).get("subnet")
    if subnet is None:
        subnet = _existing_subnet(conn, network_name(project.id))
        if subnet is None:
            used = used_subnets(conn) + [ipaddress.ip_network(a) for a in avoid]
            subnet = choose_subnet(project.id if host_key == "local" else f"{project.id}@{host_key}", used)
        chosen = subnet
        project.update_state(lambda s: record(s).update(subnet=chosen))
    bridge = bridge_name(project.id) if host_key != "local" else _local_bridge(project, conn, record)
    return NetworkPlan(network_name(project.id), bridge, subnet, f"{project.id}.vbox")


def _local_bridge(project, conn, record) -> str:
    """The project network's bridge: named from the project; for a normal user whom
    /etc/lxc/lxc-usernet allows bridges, a free one of hers, so that her LXC machines can
    join it (providers/lxc_user.py). Kept in the project's state, like its subnet."""
    import os

    if os.geteuid() == 0:
        return bridge_name(project.id)
    from providers import lxc_user
    from providers.users import user_name

    user = user_name()
    pool = set(lxc_user.bridges(user)) & lxc_user.allowed(user)
    existing = _existing(conn, network_name(project.id))
    if existing is not None:
        return existing.find("bridge").get("name")
    if not pool:
        return bridge_name(project.id)
    taken = {bridge.get("name") for bridge in (xml.find("bridge") for xml in _networks(conn)) if bridge is not None}
    recorded = record(project.load_state()).get("bridge")
    bridge = recorded if recorded in pool and recorded not in taken else lxc_user.free_bridge(user, taken)
    project.update_state(lambda s: record(s).update(bridge=bridge))
    return bridge


def _networks(conn) -> list:
    """The XML of every libvirt network (one removed while listed is left out)."""
    import libvirt

    from providers.hosts import gone

    found = []
    for net in conn.listAllNetworks():
        try:
            found.append(ET.fromstring(net.XMLDesc()))
        except libvirt.libvirtError as exc:
            if not gone(exc):  # else another project's, removed since it was listed
                raise
    return found


def _existing(conn, name: str):
    from providers.hosts import find

    net = find(conn.networkLookupByName, name)
    return None if net is None else ET.fromstring(net.XMLDesc())


def _existing_subnet(conn, name: str) -> str | None:
    xml = _existing(conn, name)
    if xml is None:
        return None
    ip = xml.find("ip")
    return str(ipaddress.ip_network(f"{ip.get('address')}/{ip.get('prefix') or ip.get('netmask')}", strict=False))


def ensure(conn, net_plan: NetworkPlan, hosts: dict[str, str]) -> None:
    """Define and start the network if needed, and make its DNS entries match `hosts`."""
    from providers.hosts import find

    net = find(conn.networkLookupByName, net_plan.name) or conn.networkDefineXML(net_plan.xml(hosts))
    if not net.isActive():
        net.create()
    net.setAutostart(True)
    _sync_dns(net, hosts)


def _sync_dns(net, hosts: dict[str, str]) -> None:
    import libvirt

    current = {}
    for host in ET.fromstring(net.XMLDesc()).findall("dns/host"):
        for hostname in host.findall("hostname"):
            current[hostname.text] = host.get("ip")
    flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
    for name, ip in current.items():
        if hosts.get(name) != ip:
            xml = f"<host ip='{ip}'><hostname>{name}</hostname></host>"
            net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, libvirt.VIR_NETWORK_SECTION_DNS_HOST, -1, xml, flags)
    for name, ip in hosts.items():
        if current.get(name) != ip:
            xml = f"<host ip='{ip}'><hostname>{name}</hostname></host>"
            net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, libvirt.VIR_NETWORK_SECTION_DNS_HOST, -1, xml,
                       flags)


def remove(conn, name: str) -> bool:
    import libvirt

    from providers.hosts import find

    net = find(conn.networkLookupByName, name)
    if net is None:
        return False
    if net.isActive():
        net.destroy()
    try:
        net.undefine()
    except libvirt.libvirtError:
        pass  # a transient network is gone once destroyed
    return True


def add_dhcp_host(conn, network: str, mac: str, ip: str, name: str) -> None:
    """A fixed address for a VM's MAC, live and in the network's config."""
    import libvirt

    net = conn.networkLookupByName(network)
    flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
    for host in ET.fromstring(net.XMLDesc()).findall("ip/dhcp/host"):
        if host.get("mac") == mac or host.get("ip") == ip:
            net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1,
                       ET.tostring(host, encoding="unicode"), flags)
    xml = f"<host mac='{mac}' name='{name}' ip='{ip}'/>"
    net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, xml, flags)


def remove_dhcp_host(conn, mac: str) -> None:
    """Drop the DHCP host entry of a MAC from whichever vbox network has it."""
    import libvirt

    for net in conn.listAllNetworks():
        try:  # the network may go meanwhile (a destroy removes it while machines go)
            if not net.name().startswith("vbox-"):
                continue
            flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
            if net.isActive():
                flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
            for host in ET.fromstring(net.XMLDesc()).findall("ip/dhcp/host"):
                if host.get("mac") == mac:
                    net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
                               -1, ET.tostring(host, encoding="unicode"), flags)
        except libvirt.libvirtError:
            continue
