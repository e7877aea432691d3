"""`env migrate`: a machine moved to another host (providers' Capability.MIGRATE). A KVM
machine that runs moves live (its memory and its disk's own layer copied while it runs;
it stops for the last memory round only); a stopped one, or one moved with --cold, goes
with its disk whole, its snapshots in it.

The target is a libvirt URI or a machine of the Envfile that is a libvirt host (a box
like `kvm-host`). There the machine joins the project's network on that host, under its
own address index, and asks for its new address as soon as it lands; SSH to it goes
through that host, as to any guest of a remote host. Its record says where it is
(`migrated_to`, read by providers/remote.machine_access): every later command finds it
there, until it is migrated again (back with `--to qemu:///system`).
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlsplit

from providers.hosts import SYSTEM_URI

from vbox_cli.errors import UsageError, VboxError
from vbox_cli.events import Phase


def target_uri(session, name: str, to: str) -> str:
    """The URI `--to` names: a machine of the Envfile (its system libvirt, over SSH with the
    project's key), or a libvirt URI of the machine's kind, checked as `host` is."""
    from providers.registry import info
    from vbox_cli.envfile.types import host_uri_parameters

    provider = session.machines[name].provider
    schemes = info(provider).uri_schemes or info(provider).moved_schemes
    if to in session.machines:
        if to == name:
            raise UsageError(f"{name} cannot be moved onto itself")
        return f"{schemes[0]}+ssh://{to}/system"
    if "://" not in to:
        raise UsageError(f"--to {to!r}: neither a machine of {session.loaded.path.name} nor a libvirt URI",
                         hint=f"machines: {', '.join(session.machines)}; or a URI like "
                              f"{schemes[0]}+ssh://root@HOST/system, {schemes[0]}:///system for this host")
    driver = to.split("://", 1)[0].partition("+")[0]
    if driver not in schemes:
        from providers.base import a

        article = "an" if schemes[0][:1] in "aeiou" or schemes[0] == "lxc" else "a"
        raise UsageError(f"--to {to}: {a(info(provider).label)} needs {article} {' or '.join(schemes)} host")
    try:
        host_uri_parameters(to)
    except ValueError as exc:
        raise UsageError(f"--to {to.split('?')[0]}: {exc}") from None
    return to


def migrate(session, name: str, to: str, cold: bool = False) -> str:
    from providers.base import NOT_CREATED, RUNNING, Capability, a, require
    from providers.registry import get, info
    from providers.remote import MIGRATED, resolve
    from vbox_cli import folderwatch
    from vbox_cli.machines import ports

    project, events = session.project, session.events
    machine = session.machines[name]
    here = session.placements[name]
    provider = require(here.provider, Capability.MIGRATE, name)
    obj = project.object_name(name)
    state = provider.state(obj)
    if state == NOT_CREATED:
        raise VboxError(f"{name} is not created", hint=f"`env up {name}` makes it")
    uri = target_uri(session, name, to)
    entry = info(machine.provider)
    home = entry.default_uri or entry.home_uri or SYSTEM_URI  # what names this host
    if urlsplit(uri).hostname is None:  # this host: its system libvirt, as for a machine without `host`
        if uri != home:
            raise UsageError(f"--to {uri}: on this host, a machine moves to {home} only")
        access = None
    else:
        access = resolve(uri, entry.default_uri or "", project, session.machines)
        if access.pending:
            raise VboxError(f"the host {to} is a machine of this Envfile that is not up",
                            hint=f"`env up {to}` first")
        if access.machine and _hosted_by(session, access.machine, name):
            raise VboxError(f"{to} runs on {name}: {name} cannot move onto a machine it hosts")
    target = get(machine.provider, access)
    if target.host.key == provider.host.key:
        raise VboxError(f"{name} is on {provider.host.shown if provider.remote else 'this host'} already")
    target.preflight(name)
    record = project.machine_state(name)
    box = session.made_from(name)
    spec = session.spec(name, box, record.get("address", ""))
    for capability, present, what in ((Capability.FOLDERS, spec.folders, "synced folders"),
                                      (Capability.NETWORKS, spec.networks, "extra networks"),
                                      (Capability.PORTS, machine.ports or record.get("ports"), "forwarded ports")):
        reason = target.unsupported(capability, spec) if present else None
        if reason:
            raise VboxError(f"{name}: its {what} cannot follow it to {target.host.shown}, because {reason}",
                            hint={"synced folders": "set folders = [] for it and `env reload` it",
                                  "extra networks": "remove its `networks`",
                                  "forwarded ports": "remove its `ports`"}[what])
    if access is not None and access.machine and any(f.host == 22 for f in machine.ports):
        raise VboxError(f"{name}: its ports would be forwarded through {access.machine}, whose port 22 is its own SSH",
                        hint="forward another host port")
    running = state == RUNNING
    always_cold = getattr(provider, "moves_cold", None)  # why its machines never move live
    live = running and not cold and not always_cold
    if live or not getattr(provider, "moves_snapshots", True):
        _clear_snapshots(session, name, provider, obj, live)
    # the project network on the target host, this machine's address on it
    host = target.network_host
    plan = host.plan_network(project, _subnets_in_use(session) if host.remote else ())
    index = session.placements.address_indexes()[name]
    address = plan.address(index)
    dns = {n: a for n, a in _addresses_on(session, host.key).items() if n != name}
    dns[name] = address
    host.ensure_network(plan, dns)
    target_spec = replace(spec, address=address, gateway=plan.gateway, network=plan.name, bridge=plan.bridge,
                          domain=plan.domain)
    how = "live" if live else "cold"
    there = target.host.shown if target.remote else "this host"
    if running and not live and not cold:
        events.note(f"{name}: {a(provider.label)} moves cold: shut down, its files copied, started there "
                    f"({always_cold})", name)
    events.phase(name, Phase.MIGRATING, f"to {there} ({how})")

    def progress(done: int, total: int) -> None:
        events.phase(name, Phase.MIGRATING, f"to {there} ({how}): {_size(done)} of {_size(total)}")

    folderwatch.stop(project, name)
    ports.remove(session, name, provider)
    source_host, source_plan = provider.network_host, session.placements.network(name)
    result = provider.migrate(spec, target, target_spec, cold, progress)
    ssh_host, ssh_port = target.ssh_endpoint(obj, address)
    own = machine.host or None  # where the Envfile puts it: no record needed when it is back there
    back_home = _same_uri(uri, own, entry.default_uri or entry.home_uri)

    def moved(state: dict) -> None:
        record = state["machines"][name]
        record.update(address=ssh_host, port=ssh_port, network=plan.name,
                      host=access.shown if target.remote else "")
        if back_home:
            record.pop(MIGRATED, None)
        else:
            record[MIGRATED] = uri

    project.update_state(moved)
    project.write_known_hosts()
    session.placements.refresh([name])
    if source_host is not None and source_plan is not None:  # its name on the network it left goes
        try:
            source_host.ensure_network(source_plan, _addresses_on(session, source_host.key))
        except Exception as exc:  # it moved all the same: a stale name there is all that is left
            session.events.warning(f"{name}: its name stays in the DNS of the network it left: {exc}", name)
    if running and result.kind == "cold":  # shut down for the move: started there
        from vbox_cli.machines.up import boot

        boot(session, name, box, address)
    if target.state(obj) == RUNNING:
        connection = session.connect(name)  # it answers there, with its own host key
        try:
            if result.kind == "live":
                _resolver_follows(session, name, connection, target_spec)
        finally:
            connection.close()
        if machine.ports:  # its forwards follow it (through the host machine it went to)
            ports.apply(session, name, address, ports.plan(session, [name]).get(name, []))
    session.events.phase(name, Phase.READY if target.state(obj) == RUNNING else Phase.MIGRATED, address)
    what = (f"migrated live to {there} in {result.seconds:.1f} s"
            + (f" (paused {result.downtime_ms} ms)" if result.downtime_ms is not None else "")
            if result.kind == "live" else
            f"moved cold to {there} in {result.seconds:.1f} s ({_size(result.copied)} copied)"
            + (", started there" if running else ""))
    return what


def _resolver_follows(session, name: str, connection, spec) -> None:
    """A VM moved live that resolves through its network's DNS (a static resolver,
    providers/guest.py) names the DNS of the network it is on now."""
    from providers.guest import resolver_command, static_resolver

    if not static_resolver(spec):
        return
    output: list[str] = []
    if connection.run(resolver_command(spec), output.append) != 0:
        session.events.warning(f"{name}: its resolver still names the DNS of the network it left until its next "
                               f"boot ({' '.join(output)[-200:] or 'no output'})", name)


def _same_uri(uri: str, own: str | None, default: str | None) -> bool:
    """Whether `uri` is where the Envfile itself puts the machine."""
    return uri == (own or default or SYSTEM_URI)


def _hosted_by(session, host_machine: str, name: str) -> bool:
    """Whether `host_machine` runs on `name` (directly, or through other machines)."""
    seen = set()
    while host_machine not in seen:
        seen.add(host_machine)
        access = session.placements[host_machine].access
        if access is None or not access.machine:
            return False
        if access.machine == name:
            return True
        host_machine = access.machine
    return False


def _subnets_in_use(session) -> tuple[str, ...]:
    """The project's subnets on this host and on its other hosts: a new one keeps clear."""
    found = []
    for each in session.machines:
        plan = session.placements.network(each) if not session.placements[each].pending else None
        if plan is not None:
            found.append(plan.subnet)
    recorded = session.project.load_state().get("network", {}).get("subnet")
    return tuple(dict.fromkeys(found + ([recorded] if recorded else [])))


def _addresses_on(session, host_key: str) -> dict[str, str]:
    """The addresses of the Envfile's machines whose network is on that host."""
    names = [n for n in session.machines if not session.placements[n].pending
             and session.placements[n].network_host is not None
             and session.placements[n].network_host.key == host_key]
    return {n: a for n, a in session.placements.addresses(names).items() if a}


def _clear_snapshots(session, name: str, provider, obj: str, live: bool) -> None:
    """A machine moves live without snapshots (libvirt refuses one with any), and an LXC
    machine without its snapshots (copies of its layer, kept on this host): vbox's own step
    snapshots go (its steps, changed later, then run on top), the user's stop it."""
    from providers.base import a
    from vbox_cli.machines.incremental import PREFIX
    from vbox_cli.machines.snapshots import RECORD

    move = "a live migration" if live else f"a move of {a(provider.label)}"
    snapshots = [s.name for s in provider.snapshots(obj)]
    users = [s for s in snapshots if not s.startswith(PREFIX)]
    if users:
        raise VboxError(f"{name} has snapshots ({', '.join(users)}), which {move} cannot take along",
                        hint=(f"`env migrate {name} --cold ...` shuts it down and moves it with them, or "
                              if live else "") + f"`env snapshot delete {name} NAME`")
    steps = [s for s in snapshots if s.startswith(PREFIX)]
    for snapshot in steps:
        provider.snapshot_delete(obj, snapshot)

    def forget(state: dict) -> None:
        kept = state["machines"][name].get(RECORD, {})
        for snapshot in steps:
            kept.pop(snapshot, None)

    if steps:
        session.project.update_state(forget)
        session.events.note(f"{name}: its {len(steps)} step snapshots stay behind ({move} cannot take "
                            "them): a step changed later runs on top of the machine", name)


def _size(count: int) -> str:
    return f"{count / 1024**2:.0f} MiB" if count < 10 * 1024**3 else f"{count / 1024**3:.1f} GiB"
