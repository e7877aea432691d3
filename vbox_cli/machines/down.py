"""`halt` and `destroy`, and finding the project's machines that the Envfile no longer
declares."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from vbox_cli import folderwatch
from vbox_cli.errors import VboxError
from vbox_cli.events import Phase
from vbox_cli.machines import ports
from vbox_cli.machines.runner import Result, close_remote, remote_first, run_each

HALT_TIMEOUT = 60.0  # as Vagrant's graceful_halt_timeout: a TCG guest under load took longer than 30 s


def halt(session, names: list[str], jobs: int | None = None, verb: str = "halt") -> list[Result]:
    """`verb`: whose triggers run ("reload": its before-triggers, before the machine stops)."""
    from providers.base import RUNNING
    from vbox_cli.machines.triggers import fire

    def stop(name: str) -> str:
        provider = session.provider(name)
        obj = session.project.object_name(name)
        if verb == "reload" and (refused := provider.refuses(obj, session.machines[name])):
            raise refused  # it would stop and not start again
        fire(session, name, "before", verb)
        if provider.state(obj) != RUNNING:
            session.events.phase(name, Phase.HALTED, "not running")
            if verb == "halt":
                fire(session, name, "after", verb)
            return "not running"
        session.events.phase(name, Phase.HALTING)
        folderwatch.stop(session.project, name)
        clean = provider.halt(obj, HALT_TIMEOUT)
        ports.remove(session, name, provider)
        if verb == "halt":
            fire(session, name, "after", verb)
        session.events.phase(name, Phase.HALTED, "" if clean else "powered off")
        return "halted" if clean else f"powered off (no clean shutdown in {HALT_TIMEOUT:g} s)"

    return remote_first(session, session.select(names), stop, jobs)


def leftovers(project, declared, records: dict | None = None) -> list[tuple[str, object, str]]:
    """(machine name, provider, object name) of this project's machines on this host that
    the Envfile does not declare: those whose provider says they are this project's
    (matched exactly, never by a name prefix: another project's id may begin with this
    one's), and those the project's state records (`records`: machine -> record).
    Providers that do not answer are skipped: `status` says so."""
    from providers.base import NOT_CREATED
    from providers.registry import local_providers

    undeclared = {m: r for m, r in (records or {}).items() if m not in declared}
    found = []
    for _name, provider, _why in local_providers():
        if provider is None:
            continue
        owned = {m: obj for m, obj in provider.owned(project.id).items() if m not in declared}
        for machine, record in undeclared.items():
            obj = project.object_name(machine)
            if machine not in owned and record.get("provider", provider.name) == provider.name \
                    and provider.state(obj) != NOT_CREATED:
                owned[machine] = obj
        found += sorted((machine, provider, obj) for machine, obj in owned.items())
    return found


def protected(machines: dict, records: dict, names: list[str]) -> list[str]:
    """Of the machines `destroy` would remove (`names`, or all), those the Envfile
    protects (`protect = true`) that vbox made (their record has the host key vbox made
    for them before making them)."""
    return [n for n in (names or list(machines))
            if n in machines and machines[n].protect and records.get(n, {}).get("host_key")]


def refuse_protected(machines: dict, records: dict, names: list[str]) -> None:
    """Raise when destroy would remove a protected machine: nothing is destroyed then."""
    refused = protected(machines, records, names)
    if refused:
        which = ", ".join(refused)
        others = [n for n in (names or list(machines)) if n not in refused]
        raise VboxError(f"{which} {'is' if len(refused) == 1 else 'are'} protected (protect = true in the Envfile): "
                        "nothing was destroyed",
                        hint="`env destroy --force-protected` destroys protected machines too"
                             + (f"; `env destroy {' '.join(others)}` the others" if others else ""))


def destroy(session, names: list[str], jobs: int | None = None, force_protected: bool = False) -> list[Result]:
    """Destroy the named machines, or everything of the project (leftovers, the networks,
    .vbox/) when no names are given. .vbox/ (the project's key among it) stays when a
    machine could not be destroyed: the next `destroy` needs it. A protected machine
    (`protect = true`) refuses the whole command unless `force_protected`."""
    if not force_protected:
        refuse_protected(session.machines, session.project.load_state()["machines"], names)
    everything = not names
    project = session.project
    placements = session.placements
    ports_gone = True
    if everything:  # while the records still say which machines had forwards
        try:
            ports.remove_all(session)
        except VboxError as exc:
            session.events.warning(f"could not remove the project's forwarded ports: {exc.message}")
            ports_gone = False
    targets = {name: (session.provider(name), project.object_name(name)) for name in session.select(names)}
    made_before = _made_by_another(session, targets)  # the Envfile's `provider` changed since it was made
    if everything:
        for machine, provider, obj in leftovers(project, session.machines, project.load_state()["machines"]):
            session.events.note(f"removing {obj}, which the Envfile does not declare")
            targets[machine] = (provider, obj)

    def remove(name: str) -> str:
        from vbox_cli.machines.triggers import fire

        provider, obj = targets[name]
        fire(session, name, "before", "destroy")
        session.events.phase(name, Phase.DESTROYING)
        if isinstance(made_before.get(name), VboxError):
            raise made_before[name]
        pending = name in session.machines and placements[name].pending
        folderwatch.stop(project, name)
        if not pending:  # a guest whose host machine is gone went with it
            provider.destroy(obj, network_going=everything)  # the networks go too: no entry of it first
            ports.remove(session, name, provider)
        if name in made_before:
            made_before[name].destroy(obj, network_going=everything)
        for box in session.store.boxes():
            session.store.remove_user(box.name, obj)
        project.console_log(name, make=False).unlink(missing_ok=True)
        project.forget_machine(name)
        fire(session, name, "after", "destroy")
        session.events.phase(name, Phase.DESTROYED)
        return "destroyed"

    if not everything:
        results = remote_first(session, list(targets), remove, jobs)
        project.write_known_hosts()
        _remove_bridges(session)
        return results
    # the guests of remote hosts, and the project network on those hosts, go first
    remote = [n for n in targets if n in session.machines and placements[n].remote]
    results = run_each(session, remote, remove, jobs) if remote else []
    networks_remote_gone = _remove_networks(session, remote, on_remote=True)
    close_remote(session, remote)
    local = [n for n in targets if n not in remote]
    # This host's networks go while the machines go (the kernel lets a bridge go with
    # ports still on it).
    with ThreadPoolExecutor(max_workers=1) as side:
        networks = side.submit(_remove_networks, session, list(session.machines), False)
        results += run_each(session, local, remove, jobs) if local else []
        networks_gone = networks.result() and networks_remote_gone
    _remove_bridges(session)
    if all(r.ok for r in results) and networks_gone and ports_gone:
        project.remove_state_dir()
    else:
        session.events.warning(f"{project.state_dir} is kept (the project's key and records): "
                               "run `env destroy` again once what failed above is dealt with")
    return results


def _made_by_another(session, targets: dict) -> dict:
    """machine -> the provider that made it (or why it cannot be reached), for the machines
    whose Envfile now names another provider: destroy removes the machine it made too."""
    from providers.registry import get, info
    from providers.remote import MIGRATED, resolve
    from vbox_cli.machines.drift import made_by_another

    found = {}
    for name, (provider, _obj) in targets.items():
        record = session.project.machine_state(name)
        was = made_by_another(record, provider.name)
        if not was:
            continue
        try:
            host = record.get(MIGRATED) or record.get("host")  # where it is: as `host` took it, or moved
            entry = info(was)
            access = resolve(host, entry.default_uri, session.project, session.machines) \
                if entry.remote and (host or entry.default_uri) else None
            found[name] = get(was, access)
        except VboxError as exc:  # its destroy fails, and its record stays for the next one
            found[name] = VboxError(f"{name} was made by the {was} provider, which does not answer: {exc.message}",
                                    hint=exc.hint)
    return found


def _remove_bridges(session) -> None:
    """vbox's Open vSwitch bridges that this Envfile names and no machine uses any more."""
    from providers import ovs

    named = {net.ovs for machine in session.machines.values() for net in machine.networks if net.ovs}
    try:
        for bridge in ovs.remove_unused({b for b in named if b.startswith(ovs.PREFIX)}):
            session.events.note(f"removed the Open vSwitch bridge {bridge}")
    except VboxError as exc:
        session.events.warning(f"could not remove an Open vSwitch bridge: {exc.message}")


def _remove_networks(session, names: list[str], on_remote: bool) -> bool:
    """The project network on each host of these machines; False if one could not be removed."""
    placements = session.placements
    seen = set()
    removed_all = True
    for name in names:
        placement = placements[name]
        host = placement.network_host
        if host is None or host.key in seen or placement.pending or host.remote != on_remote:
            continue
        seen.add(host.key)
        try:
            if host.remove_network(session.project.id):
                where = f" on {host.shown}" if host.remote else ""
                session.events.note(f"removed network vbox-{session.project.id}{where}")
        except VboxError as exc:
            session.events.warning(f"could not remove the project network on {host.shown}: {exc.message}")
            removed_all = False
    return removed_all
