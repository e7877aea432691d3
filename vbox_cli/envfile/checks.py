"""The checks of an Envfile that need more than one field, or the file system: which
machines may have forwarded ports, extra networks and synced folders, and where; that a
box location or a folder stays inside the project; that hosts make sense. Each reports
problems through `report(location, message, hint=None)` (vbox_cli/envfile/load.py)."""

from __future__ import annotations

from pathlib import Path

from vbox_cli.envfile.model import Envfile


def box_urls(envfile: Envfile, base_dir: Path | None, report) -> None:
    """A box location in the Envfile is a URL, or a path that stays in the project."""
    tables = [(("defaults", "box_url"), envfile.defaults.box_url)]
    tables += [(("machines", name, "box_url"), spec.box_url) for name, spec in envfile.machines.items()]
    tables = [(where, url) for where, url in tables if url is not None]
    if base_dir is None or not tables:
        return
    from boxes.catalog import CatalogError, locate  # urllib: only for Envfiles that name a box location

    for where, url in tables:
        try:
            locate(url, base=base_dir, confine=base_dir)
        except CatalogError as exc:
            report(where, exc.message, hint=exc.hint)


def folders(envfile: Envfile, base_dir: Path | None, report) -> None:
    """Folders of the project, one per guest path, where the machine can have them."""
    from vbox_cli.envfile.load import referenced_folders
    from providers.registry import lacks
    from vbox_cli.files import project_file

    if base_dir is not None:
        for location, relative in referenced_folders(envfile):
            try:
                target = project_file(base_dir, relative)
            except ValueError as exc:
                report(location, str(exc), hint="a machine may only see folders of the project")
                continue
            if not target.is_dir():
                report(location, f"{'no such folder' if not target.exists() else 'not a folder'}: {relative!r} "
                                 f"(relative to {base_dir})")
    for name, machine in envfile.machines_resolved().items():
        where = ("machines", name, "folders") if envfile.machines[name].folders is not None else ("defaults", "folders")
        seen: set[str] = set()
        for index, folder in enumerate(machine.folders):
            guest = "/" + "/".join(part for part in folder.guest.split("/") if part not in ("", "."))
            if guest == "/" or ".." in guest.split("/"):
                report((*where, index, "guest"), f"{folder.guest!r} cannot hold a synced folder",
                       hint='name a folder of its own, like "/vbox" or "/srv/data"')
            elif guest in seen:
                report((*where, index, "guest"), f"two folders at {guest} in machine {name!r}")
            seen.add(guest)
        reason = lacks(machine.provider, "folders") or ("it runs on another host (`host`), which does not see "
                                                        "this project folder" if machine.host else None)
        if reason and machine.folders and machine.folders_set:
            report(where, f"synced folders are not supported for machine {name!r}, because {reason}",
                   hint="set folders = [] for it")


def ports(envfile: Envfile, report) -> None:
    """Forwards only where vbox can make them (this host's project network), and no host
    port forwarded twice (an address of 0.0.0.0 takes the port on every address)."""
    from providers.registry import lacks

    seen: dict[tuple[str, int], list[tuple[str, str]]] = {}
    for name, machine in envfile.machines_resolved().items():
        for index, forward in enumerate(machine.ports):
            where = ("machines", name, "ports", index)
            reason = lacks(machine.provider, "ports") or ("it runs on another host (`host`), where its network is"
                                                           if machine.host else None)
            if reason:
                report(where, f"forwarded ports are not supported for machine {name!r}, because {reason}")
                continue
            key = (forward.protocol, forward.host)
            for address, other in seen.get(key, []):
                if "0.0.0.0" in (address, forward.address) or address == forward.address:
                    report((*where, "host"), f"port {forward.host}/{forward.protocol} on {forward.address} is also "
                                             f"forwarded by {other}",
                           hint="each host port can be forwarded once; `auto = true` picks a free one at up")
                    break
            seen.setdefault(key, []).append((forward.address, f"machines.{name}.ports[{index}]"))


def networks(envfile: Envfile, report) -> None:
    """Extra networks only where vbox can attach them (machines of this host), each bridge
    once per machine, a static address once per bridge and VLAN."""
    from providers.base import MAX_NETWORKS
    from providers.registry import lacks

    addresses: dict[tuple, str] = {}
    for name, machine in envfile.machines_resolved().items():
        joined = set()
        if len(machine.networks) > MAX_NETWORKS:
            report(("machines", name, "networks"), f"machine {name!r} joins {len(machine.networks)} networks; "
                                                   f"at most {MAX_NETWORKS}")
        for index, network in enumerate(machine.networks):
            where = ("machines", name, "networks", index)
            reason = lacks(machine.provider, "networks") or ("it runs on another host (`host`), whose bridges "
                                                              "vbox does not manage" if machine.host else None)
            if reason:
                report(where, f"extra networks are not supported for machine {name!r}, because {reason}")
                continue
            bridge = ("ovs", network.ovs, network.vlan) if network.ovs else ("bridge", network.bridge, None)
            if bridge in joined:
                report(where, f"machine {name!r} joins {bridge[1]}" + (f" on VLAN {bridge[2]}" if bridge[2] else "")
                       + " twice")
            joined.add(bridge)
            if network.address:
                ip = network.address.split("/")[0]
                if (bridge, ip) in addresses:
                    report((*where, "address"), f"{ip} is also the address of {addresses[(bridge, ip)]}")
                addresses[(bridge, ip)] = f"machines.{name}.networks[{index}]"


def ansible(envfile: Envfile, report) -> None:
    """An ansible step needs ansible-playbook on this host."""
    steps = [(("machines", name, "provision", index, "ansible"), step)
             for name, spec in envfile.machines.items() for index, step in enumerate(spec.provision or ())
             if getattr(step, "ansible", None)]
    steps += [(("defaults", "provision", index, "ansible"), step)
              for index, step in enumerate(envfile.defaults.provision) if getattr(step, "ansible", None)]
    if not steps:
        return
    from provisioners.ansible import MISSING_HINT, playbook_command

    if playbook_command() is None:
        for where, _step in steps:
            report(where, "ansible-playbook is not installed on this host", hint=MISSING_HINT)


def triggers(envfile: Envfile, report) -> None:
    """A trigger's `run_in` is a machine of the Envfile (matched exactly)."""
    for name, spec in envfile.machines.items():
        for index, trigger in enumerate(spec.triggers):
            if trigger.run_in is not None and trigger.run_in not in envfile.machines:
                report(("machines", name, "triggers", index, "run_in"), f"no machine {trigger.run_in!r} in this Envfile",
                       hint=f"machines: {', '.join(sorted(envfile.machines))}")


def depends_on(envfile: Envfile, report) -> None:
    """Machines of the Envfile, not itself, no cycle."""
    needs: dict[str, list[str]] = {}
    for name, spec in envfile.machines.items():
        for index, other in enumerate(spec.depends_on):
            where = ("machines", name, "depends_on", index)
            if other == name:
                report(where, f"machine {name!r} depends on itself")
            elif other not in envfile.machines:
                report(where, f"no machine {other!r} in this Envfile",
                       hint=f"machines: {', '.join(sorted(envfile.machines))}")
            else:
                needs.setdefault(name, []).append(other)
    reported: set[str] = set()
    for start in needs:
        path = _cycle(start, needs)
        if path and not reported & set(path):
            reported |= set(path)
            report(("machines", start, "depends_on"), "depends_on makes a cycle: " + " -> ".join(path),
                   hint="a machine cannot wait for one that waits for it")


def _cycle(start: str, needs: dict[str, list[str]]) -> list[str] | None:
    """The first cycle back to `start` through `needs`, as a path, or None."""
    stack = [(start, [start])]
    seen: set[str] = set()
    while stack:
        current, path = stack.pop()
        for other in needs.get(current, []):
            if other == start:
                return [*path, start]
            if other not in seen:
                seen.add(other)
                stack.append((other, [*path, other]))
    return None


def hosts(envfile: Envfile, report) -> None:
    """`host` only where the provider can live on another host; a machine that hosts
    itself or a cycle of hosts; no more machines than the project network has addresses."""
    from urllib.parse import urlsplit

    from providers.registry import info
    from vbox_cli.machines.placement import MAX_MACHINES

    resolved = envfile.machines_resolved()
    hosted_by: dict[str, str] = {}
    for name, machine in resolved.items():
        if not machine.host:
            continue
        where = ("machines", name, "host") if envfile.machines[name].host else ("defaults", "host")
        if not info(machine.provider).remote:
            report(where, f"`host` is for machines that can live on another libvirt host; machine {name!r} is "
                          f"{machine.provider}, which runs on this host",
                   hint=f"remove `host` from [machines.{name}]" if where[0] == "machines" else
                   f"set host in [machines.NAME] for those machines, or give [machines.{name}] another provider")
            continue
        target = urlsplit(machine.host).hostname
        if target == name:
            report(where, f"machine {name!r} names itself as its host")
        elif target in resolved:
            hosted_by[name] = target
    for start in hosted_by:
        seen, current = [start], hosted_by[start]
        while current in hosted_by and current not in seen:
            seen.append(current)
            current = hosted_by[current]
        if current == start:
            where = ("machines", start, "host") if envfile.machines[start].host else ("defaults", "host")
            report(where, "machines host each other: " + " -> ".join([*seen, start]),
                   hint="a host machine must run on this host or on a host outside the Envfile")
    if len(resolved) > MAX_MACHINES:
        report(("machines",), f"{len(resolved)} machines; a project network has addresses for {MAX_MACHINES}")
