"""Forwarded ports: kernel NAT rules on this host, so no vbox process has to stay alive.

Rules go through iptables, the tool (and nf_tables backend) libvirt itself uses for the
project network, in chains of each project (names from a hash of its id):

- nat `VBX-<h>-DNAT`, jumped to from PREROUTING (other hosts) and OUTPUT (this host):
  the host address and port become the machine's. A forward on 0.0.0.0 matches every
  local address of this host (`addrtype LOCAL`), not traffic passing through it.
- nat `VBX-<h>-SNAT`, from POSTROUTING: connections from 127.0.0.0/8 are masqueraded
  to the bridge's address (a loopback source cannot leave this host), which also needs
  `route_localnet` on the project's bridge.
- filter `VBX-<h>-FWD`, first in FORWARD: libvirt's own chain rejects new connections
  into its NAT networks; a forwarded one (conntrack state DNAT) is let through first.

Every rule carries the comment `vbox:<project>:<machine>`: the rules of a machine are
found and removed exactly, and `who holds this port` has an answer.
"""

from __future__ import annotations

import hashlib
import shlex
import threading
from dataclasses import dataclass

from vbox_cli.errors import VboxError

COMMENT = "vbox:{project}:{machine}"


@dataclass(frozen=True)
class Forward:
    protocol: str  # tcp | udp
    address: str  # the host address ("0.0.0.0": all of this host's)
    host: int
    guest: int

    def __str__(self) -> str:
        return f"{self.address}:{self.host}/{self.protocol} -> {self.guest}"


@dataclass(frozen=True)
class Installed:
    """A forward found in the kernel's rules."""

    project: str
    machine: str
    forward: Forward
    target: str  # the machine's address


def _hash(project_id: str) -> str:
    return hashlib.sha256(project_id.encode()).hexdigest()[:8]


def chains(project_id: str) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """role -> (table, chain, the built-in chains that jump to it)."""
    h = _hash(project_id)
    return {"dnat": ("nat", f"VBX-{h}-DNAT", ("PREROUTING", "OUTPUT")),
            "snat": ("nat", f"VBX-{h}-SNAT", ("POSTROUTING",)),
            "fwd": ("filter", f"VBX-{h}-FWD", ("FORWARD",))}


def _iptables(table: str, *args: str, check: bool = True):
    from vbox_cli import proc

    return proc.run(["iptables", "-w", "10", "-t", table, *args], check=check, timeout=60)


def _rules(table: str) -> list[list[str]]:
    """The rules of a table as argv lists (`iptables -S`)."""
    out = _iptables(table, "-S").stdout
    return [shlex.split(line) for line in out.splitlines() if line.startswith("-A ")]


def ensure_chains(project_id: str) -> None:
    """The project's chains exist, and each is jumped to first from its built-in chains
    (libvirt puts its own jumps first when it starts: ours must come before them)."""
    for table, chain, parents in chains(project_id).values():
        if _iptables(table, "-n", "-L", chain, check=False).returncode != 0:
            _iptables(table, "-N", chain)
        for parent in parents:
            rules = [r for r in _rules(table) if r[1] == parent]
            first = rules[0] if rules else None
            if first == ["-A", parent, "-j", chain]:
                continue
            while _iptables(table, "-C", parent, "-j", chain, check=False).returncode == 0:
                _iptables(table, "-D", parent, "-j", chain)
            _iptables(table, "-I", parent, "1", "-j", chain)


def _rule_args(project_id: str, machine: str, target: str, forward: Forward) -> dict[str, list[str]]:
    comment = ["-m", "comment", "--comment", COMMENT.format(project=project_id, machine=machine)]
    match = ["-p", forward.protocol]
    local = ["-m", "addrtype", "--dst-type", "LOCAL"] if forward.address == "0.0.0.0" else \
        ["-d", f"{forward.address}/32"]
    return {
        "dnat": [*local, *match, *comment, "--dport", str(forward.host), "-j", "DNAT", "--to-destination",
                 f"{target}:{forward.guest}"],
        "snat": ["-s", "127.0.0.0/8", "-d", f"{target}/32", *match, *comment, "--dport", str(forward.guest),
                 "-j", "MASQUERADE"],
        "fwd": ["-d", f"{target}/32", *match, *comment, "--dport", str(forward.guest), "-m", "conntrack",
                "--ctstate", "DNAT", "-j", "ACCEPT"],
    }


_CHANGES = threading.RLock()  # machines come up in parallel: one change of the rules at a time


def apply(project_id: str, machine: str, target: str, bridge: str, forwards: list[Forward]) -> None:
    """Make the machine's forwards exactly `forwards` (to its address `target`)."""
    with _CHANGES:  # checking that a chain exists and making it is not one step
        _apply(project_id, machine, target, bridge, forwards)


def _apply(project_id: str, machine: str, target: str, bridge: str, forwards: list[Forward]) -> None:
    remove(project_id, machine)
    if not forwards:
        return
    ensure_chains(project_id)
    if any(f.address.startswith("127.") or f.address == "0.0.0.0" for f in forwards):
        _route_localnet(bridge)
    named = chains(project_id)
    for forward in forwards:
        for role, args in _rule_args(project_id, machine, target, forward).items():
            table, chain, _ = named[role]
            _iptables(table, "-A", chain, *args)


def _route_localnet(bridge: str) -> None:
    """Packets from 127.0.0.0/8, masqueraded, may be routed out of the project's bridge."""
    try:
        with open(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet", "w") as f:
            f.write("1")
    except OSError as exc:
        raise VboxError(f"cannot let loopback traffic reach the machines on {bridge}: {exc.strerror}") from None


def remove(project_id: str, machine: str) -> None:
    """Remove every rule of one machine (found by its comment)."""
    with _CHANGES:
        _remove(project_id, machine)


def _remove(project_id: str, machine: str) -> None:
    comment = COMMENT.format(project=project_id, machine=machine)
    for table, chain, _ in chains(project_id).values():
        if _iptables(table, "-n", "-L", chain, check=False).returncode != 0:
            continue
        for rule in _rules(table):
            if rule[1] == chain and _comment(rule) == comment:
                _iptables(table, "-D", *rule[1:])


def remove_all(project_id: str) -> None:
    """The project's chains and the jumps to them."""
    for table, chain, parents in chains(project_id).values():
        for parent in parents:
            while _iptables(table, "-C", parent, "-j", chain, check=False).returncode == 0:
                _iptables(table, "-D", parent, "-j", chain)
        if _iptables(table, "-n", "-L", chain, check=False).returncode == 0:
            _iptables(table, "-F", chain)
            _iptables(table, "-X", chain)


def _comment(rule: list[str]) -> str | None:
    return rule[rule.index("--comment") + 1] if "--comment" in rule else None


def installed() -> list[Installed]:
    """Every forward vbox has made on this host, of every project."""
    found = []
    for rule in _rules("nat"):
        comment = _comment(rule) or ""
        if not (rule[1].startswith("VBX-") and rule[1].endswith("-DNAT") and comment.startswith("vbox:")):
            continue
        _, project, machine = comment.split(":", 2)
        target, _, guest = rule[rule.index("--to-destination") + 1].rpartition(":")
        address = "0.0.0.0" if "--dst-type" in rule else rule[rule.index("-d") + 1].removesuffix("/32")
        forward = Forward(rule[rule.index("-p") + 1], address, int(rule[rule.index("--dport") + 1]), int(guest))
        found.append(Installed(project, machine, forward, target))
    return found


def leaks(project_id: str | None) -> list[str]:
    """Chains and rules of a project (or of any) still on this host."""
    found = []
    for table in ("nat", "filter"):
        out = _iptables(table, "-S", check=False).stdout
        for line in out.splitlines():
            if line.startswith("-N VBX-") and (project_id is None or _hash(project_id) in line):
                found.append(f"iptables {table} chain {line.split()[1]}")
    return found


def overlaps(a: Forward, b: Forward) -> bool:
    return a.protocol == b.protocol and a.host == b.host and \
        (a.address == b.address or "0.0.0.0" in (a.address, b.address))


def holder(forward: Forward, project_id: str, machine: str) -> str | None:
    """Who holds the host side of `forward`, if anyone but this machine: another vbox
    machine's forward, or a program listening there."""
    for other in installed():
        if overlaps(other.forward, forward) and (other.project, other.machine) != (project_id, machine):
            return f"vbox machine {other.machine!r} of project {other.project} ({other.forward})"
    return _listener(forward)


def _listener(forward: Forward) -> str | None:
    import errno
    import socket

    kind = socket.SOCK_STREAM if forward.protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as probe:
        if forward.protocol == "tcp":
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
        try:
            probe.bind((forward.address, forward.host))
            return None
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"no address {forward.address} on this host"
            if exc.errno != errno.EADDRINUSE:
                return f"this host ({exc.strerror})"
    return _program_on(forward) or "another program on this host"


def _program_on(forward: Forward) -> str | None:
    """`ss` names the process listening on a port (as root)."""
    import re

    from vbox_cli import proc

    flag = "-ltnpH" if forward.protocol == "tcp" else "-lunpH"
    try:
        out = proc.run(["ss", flag, f"sport = :{forward.host}"], check=False, timeout=10).stdout
    except VboxError:
        return None
    match = re.search(r'users:\(\("([^"]+)",pid=(\d+)', out)
    return f"{match[1]} (pid {match[2]})" if match else None


def through_host_script(project_id: str, machine: str, host_address: str, target: str,
                        forwards: list[Forward]) -> str:
    """A shell script for root in a libvirt host that is a machine of the Envfile: its
    forwards of `machine` (a guest of its own at `target`) made exactly `forwards`. This
    host forwards port P to that host's port P (`host_address`), which forwards it to the
    guest's port. Every value is validated before it gets here (ports are numbers,
    addresses IPv4, the comment is names of letters, digits and '-')."""
    import ipaddress

    for address in (host_address, target):
        ipaddress.IPv4Address(address)  # raises on anything else
    comment = COMMENT.format(project=project_id, machine=machine)
    lines = ["set -e", f"c={shlex.quote(comment)}",
             "for t in nat filter; do",
             # `iptables -S` quotes the comment (a ':' in it); ours has no space: its quotes can go
             "  iptables -w 10 -t $t -S | grep -F -e \"--comment $c \" -e \"--comment \\\"$c\\\" \" |"
             " sed 's/^-A /-D /; s/\"//g' | while read -r rule; do iptables -w 10 -t $t $rule; done",
             "done"]
    for f in forwards:
        proto, port, guest = f.protocol, int(f.host), int(f.guest)
        assert proto in ("tcp", "udp")
        lines.append(f"iptables -w 10 -t nat -I PREROUTING -d {host_address}/32 -p {proto} --dport {port} "
                     f"-m comment --comment \"$c\" -j DNAT --to-destination {target}:{guest}")
        lines.append(f"iptables -w 10 -t filter -I FORWARD -d {target}/32 -p {proto} --dport {guest} "
                     f"-m conntrack --ctstate DNAT -m comment --comment \"$c\" -j ACCEPT")
    return "\n".join(lines) + "\n"


class LocalPorts:
    """Forwarded ports for machines on this host's project network."""

    def forward_ports(self, project_id: str, machine: str, target: str, bridge: str,
                      forwards: list[Forward]) -> None:
        apply(project_id, machine, target, bridge, forwards)

    def unforward_ports(self, project_id: str, machine: str) -> None:
        remove(project_id, machine)
