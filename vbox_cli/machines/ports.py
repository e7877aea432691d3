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
    """The machine's forwards in the kernel, and in its record (what `env port` shows)."""
    provider = session.provider(name)
    bridge = session.placements.network(name).bridge
    # recorded first: an up killed while it makes the rules leaves a record destroy acts on
    session.project.set_machine(name, ports=[
        {"protocol": f.protocol, "address": f.address, "host": f.host, "guest": f.guest} for f in forwards])
    provider.forward_ports(session.project.id, name, address, bridge, forwards)
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


def remove_all(session) -> None:
    """Every forward of the project, and its chains (destroy)."""
    from providers.ports import remove_all as remove_chains

    if any("ports" in record for record in session.project.load_state()["machines"].values()):
        remove_chains(session.project.id)
