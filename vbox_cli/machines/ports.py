"""Forwarded ports: which host port each forward gets (checked before anything is made),
and keeping the kernel's rules in step with the machines: made when a machine runs,
removed when it stops or goes."""

from __future__ import annotations

from vbox_cli.errors import VboxError

AUTO_RANGE = 100  # ports tried after a taken one, with `auto = true`


def plan(session, names: list[str]) -> dict[str, list]:
    """machine -> its forwards (providers.ports.Forward), host ports chosen. A port held by
    anyone else (a program of this host, another vbox machine) is refused, naming who holds
    it, unless the forward says `auto`: then the next free port is taken and said."""
    from providers.base import Capability, require
    from providers.ports import Forward, holder, overlaps

    planned: dict[str, list] = {}
    claimed: list[Forward] = []
    for name in names:
        machine = session.machines[name]
        if not machine.ports:
            continue
        require(session.provider(name), Capability.PORTS, name)
        hop = session.placements[name].host_machine
        if hop and any(asked.host == 22 for asked in machine.ports):  # the host machine's port 22 is its sshd
            raise VboxError(f"{name}: it runs on {hop}, through which its ports are forwarded, and port 22 there is "
                            f"{hop}'s own SSH", hint="forward another host port")
        recorded = {(f["protocol"], f["address"], f["guest"]): f["host"]
                    for f in session.project.machine_state(name).get("ports", [])}
        forwards = []
        for asked in machine.ports:
            start = recorded.get((asked.protocol, asked.address, asked.guest), asked.host) if asked.auto \
                else asked.host
            candidates = [start, *range(asked.host, min(asked.host + AUTO_RANGE, 65535) + 1)] if asked.auto \
                else [asked.host]
            chosen, taken_by = None, None
            for port in candidates:
                forward = Forward(asked.protocol, asked.address, port, asked.guest)
                mine = next((f for f in claimed if overlaps(f, forward)), None)
                who = f"another forward of this Envfile ({mine})" if mine else holder(forward, session.project.id,
                                                                                       name)
                if who is None:
                    chosen = forward
                    break
                taken_by = taken_by or who
            if chosen is None:
                raise VboxError(f"{name}: port {asked.host}/{asked.protocol} on {asked.address} is taken by {taken_by}",
                                hint="choose another host port in the Envfile, or set auto = true on the forward")
            if chosen.host != asked.host:
                session.events.note(f"{name}: port {asked.host}/{asked.protocol} is taken by {taken_by}; "
                                    f"forwarding {chosen.host} instead", name)
            claimed.append(chosen)
            forwards.append(chosen)
        planned[name] = forwards
    return planned


def apply(session, name: str, address: str, forwards: list) -> None:
    """The machine's forwards in the kernel, and in its record (what `env port` shows). A
    guest of a libvirt host that is a machine of the Envfile (moved there by `env
    migrate`) is reached through that host: this host forwards each port to the same port
    of the host machine, whose own rules forward it to the guest."""
    provider = session.provider(name)
    # recorded first: an up killed while it makes the rules leaves a record destroy acts on
    session.project.set_machine(name, ports=[
        {"protocol": f.protocol, "address": f.address, "host": f.host, "guest": f.guest} for f in forwards])
    hop = session.placements[name].host_machine
    if hop:
        from providers.ports import Forward

        hop_address = session.project.machine_state(hop)["address"]
        _in_host(session, name, hop, hop_address, address, forwards)
        provider.forward_ports(session.project.id, name, hop_address, session.placements.network(hop).bridge,
                               [Forward(f.protocol, f.address, f.host, f.host) for f in forwards])
    else:
        provider.forward_ports(session.project.id, name, address, session.placements.network(name).bridge,
                               forwards)
    for forward in forwards:
        session.events.note(f"{name}: forwarding {forward.address}:{forward.host}/{forward.protocol} to port "
                            f"{forward.guest}", name)


def remove(session, name: str, provider=None) -> None:
    """The machine's forwards out of the kernel (it stopped, or goes); the record keeps the
    ports it had, so that the next `up` gives an `auto` forward the same one."""
    from providers.base import Capability, supports

    provider = provider or session.provider(name)
    if "ports" in session.project.machine_state(name) and supports(provider, Capability.PORTS):
        provider.unforward_ports(session.project.id, name)
        hop = session.placements[name].host_machine
        if hop and session.project.machine_state(name).get("ports"):
            try:
                _in_host(session, name, hop, session.project.machine_state(hop)["address"], "", [])
            except VboxError:
                pass  # the host machine is down or gone: its rules with it


def _in_host(session, name: str, hop: str, hop_address: str, address: str, forwards: list) -> None:
    """The host machine `hop`'s rules that forward its ports to its guest `name`."""
    import shlex

    from providers.ports import through_host_script

    script = through_host_script(session.project.id, name, hop_address, address or hop_address, forwards)
    lines: list[str] = []
    connection = session.connect(hop)
    try:
        status = connection.run(f"sudo sh -c {shlex.quote(script)}", lines.append)
    finally:
        connection.close()
    if status != 0:
        raise VboxError(f"{name}: its forwarded ports could not be made in {hop}, its host: "
                        + (" / ".join(lines[-3:]) or f"exit status {status}"))


def remove_all(session) -> None:
    """Every forward of the project, and its chains (destroy)."""
    from providers.ports import remove_all as remove_chains

    if any("ports" in record for record in session.project.load_state()["machines"].values()):
        remove_chains(session.project.id)
