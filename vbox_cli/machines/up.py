"""`up`: create, start and provision machines.

Every step is ordered so that a process killed at any point leaves something the next
`up` or `destroy` handles: a machine's record (with the host key vbox made for it) is
written before the machine is made, and a machine whose record is missing is not
trusted but made anew.
"""

from __future__ import annotations

import threading
import time

from vbox_cli.errors import VboxError
from vbox_cli.events import Phase
from vbox_cli.machines import incremental, ports
from vbox_cli.machines.provision import run_steps
from vbox_cli.machines.runner import Result, run_each


_BRIDGES = threading.Lock()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def up(session, names: list[str], jobs: int | None = None, provision: bool = True,
       restart: bool = False, locked: bool = False, abort_on_error: bool = False, verb: str = "up",
       in_place: bool = False) -> list[Result]:
    """`restart`: a running machine that takes a change of the Envfile only when it starts
    again (a KVM machine's synced folders) is restarted; without it, `up` says so.
    `locked`: the boxes the lock names (fetched if missing), and nothing made unless the
    project matches Envfile.lock (vbox_cli/lockfile.py). `abort_on_error`: when a machine
    fails, the machines this up made are destroyed again (those that were there stay).
    `verb`: whose triggers run ("reload": its after-triggers, once the machine is up).
    `in_place`: changed steps run on top of what the old ones left, not from the snapshot
    before the first of them (vbox_cli/machines/incremental.py)."""
    results = _up(session, names, jobs, provision, restart, locked, verb, in_place)
    if abort_on_error and not all(r.ok for r in results) and session.created:
        undone = _abort(session)
        for result in results:
            if result.machine in undone and result.ok:
                result.action = "made, then destroyed (--abort-on-error)"
    return results


def _abort(session) -> list[str]:
    """Undo what this up made: its machines (not protected ones), and the project's
    network and .vbox/ when no other machine of the project is left. Returns the
    machines destroyed."""
    from vbox_cli.machines.down import destroy, leftovers, protected

    made = [n for n in session.machines if n in session.created]
    records = session.project.load_state()["machines"]
    kept = protected(session.machines, records, made)
    for name in kept:
        session.events.warning(f"{name}: kept although this up made it: it is protected (protect = true)", name)
    undo = [n for n in made if n not in kept]
    if not undo:
        return []
    session.events.note(f"--abort-on-error: destroying what this up made: {', '.join(undo)}")
    others = [n for n, record in records.items() if record.get("host_key") and n not in undo]  # made earlier
    alone = not others and not leftovers(session.project, session.machines)
    results = destroy(session, [] if alone else undo)
    return [r.machine for r in results if r.ok]


def _up(session, names: list[str], jobs: int | None, provision: bool, restart: bool, locked: bool,
        verb: str, in_place: bool = False) -> list[Result]:
    from vbox_cli import lockfile
    from vbox_cli.machines.order import Barrier, with_dependencies

    selected = session.select(names, autostart_only=not names)
    if not selected:
        return []  # nothing to bring up: make nothing, not even the network
    selected = with_dependencies(session.machines, selected)  # what they depend on comes too
    placements = session.placements
    for name in list(selected):  # a machine's host, when it is a machine of this Envfile, comes too
        host = placements[name].host_machine
        if host and host not in selected:
            selected.insert(0, host)
    preflight(session, selected)
    # before anything is made; a guest of a machine of the Envfile has its forwards through it (env migrate)
    forwards = ports.plan(session, [n for n in selected if not placements[n].remote or placements[n].host_machine])
    from vbox_cli.machines.boxes import boxes_for

    pinned = lockfile.pins(lockfile.path_of(session.loaded.path), session.machines) if locked else {}
    boxes = boxes_for(session, selected, pinned)  # fetched where the store lacks them (box_url)
    if locked:
        lockfile.check(session, boxes, selected)
    elif lockfile.write_if_missing(session, boxes, selected):
        session.events.note(f"wrote {lockfile.NAME}: the boxes and steps these machines get (commit it)")
    session.project.ensure_client_key()
    # first the machines of this host (a Xen host among them), then the guests of remote hosts
    first = [n for n in selected if not placements[n].remote]
    later = [n for n in selected if placements[n].remote]
    barrier = Barrier(session, selected)  # all boot at once; steps wait for those of depends_on
    results = []
    for batch in (first, later):
        if not batch:
            continue
        if batch is later:
            placements.refresh(later)  # their hosts are up now
            preflight(session, later)
        addresses = placements.addresses(batch)
        ensure_networks(session, batch)
        results += run_each(session, barrier.schedule(batch), lambda name: up_one(
            session, name, boxes[name], addresses[name], provision, forwards.get(name),
            restart, barrier, verb, in_place), jobs, finished=barrier.finished)
    return results


def preflight(session, names: list[str]) -> None:
    """An unavailable provider, or one that cannot run here, fails before anything is made."""
    from providers.base import Capability, supports

    from providers import ovs
    from vbox_cli.machines import drift

    for name in names:
        provider = session.provider(name)
        made_with = drift.made_by_another(session.project.machine_state(name), provider.name)
        if made_with:
            raise VboxError(f"{name} was made by the {made_with} provider, and the Envfile now says "
                            f"{provider.name}: nothing was done",
                            hint=f"`env destroy {name}` removes the {made_with} machine (and what it holds); "
                                 f"then `env up {name}` makes it with {provider.name}")
        if supports(provider, Capability.PREFLIGHT):
            provider.preflight(name)
        for network in session.machines[name].networks:  # the bridges are there, or vbox may make them
            ovs.check("ovs" if network.ovs else "bridge", network.ovs or network.bridge, name)


def ensure_networks(session, names: list[str]) -> None:
    """The project network on each host these machines join, with a DNS entry for every
    machine of the Envfile whose network is there."""
    placements = session.placements
    for host, on_host in placements.network_hosts(names).values():
        everyone = placements.same_network(on_host[0])
        dns = {n: a for n, a in placements.addresses(everyone).items() if a}
        host.ensure_network(placements.network(on_host[0]), dns)


def up_one(session, name: str, box, address: str, provision: bool, forwards: list | None = None,
           restart: bool = False, barrier=None, verb: str = "up", in_place: bool = False) -> str:
    from providers.base import NOT_CREATED, RUNNING
    from vbox_cli.machines.triggers import fire
    from vbox_cli.sshkeys import new_ed25519

    if verb == "up":
        fire(session, name, "before", "up")

    placement = session.placements[name]
    provider = placement.provider
    project = session.project
    from vbox_cli.machines import drift

    obj = project.object_name(name)
    events = session.events
    settings = session.machines[name].model_dump(mode="json", exclude={"name"})
    state = provider.state(obj)
    record = project.machine_state(name)
    actions = []
    if state != NOT_CREATED and not record.get("host_key"):
        events.note(f"{name}: found a machine vbox has no record of: making it anew", name)
        provider.destroy(obj)
        state = NOT_CREATED
    if state != NOT_CREATED:
        box = session.made_from(name, default=box)  # it keeps its box; a newer one is for new machines
    if state == NOT_CREATED:
        events.phase(name, Phase.CREATING, f"from {box.name} {box.version}")
        private, public = new_ed25519(f"{obj} host key")
        keep = {"address_index": record.get("address_index")}
        network = session.placements.network(name)
        project.update_state(lambda s: s["machines"].__setitem__(name, {
            **keep, "host_key": public, "address": address, "user": box.meta.user,
            "provider": provider.name, "host": placement.where, "network": network.name if network else "",
            "box": box.name, "box_version": box.version, "box_digest": box.digest,
            "created": _now(), "provisioned": [], "chain": [], "disk": session.machines[name].disk,
            "unprivileged": session.machines[name].unprivileged,
        }))
        session.store.add_user(box.name, obj, {"project": str(project.folder), "machine": name,
                                               "provider": provider.name, "version": box.version})
        spec = session.spec(name, box, address, (private, public))
        say_accel(session, provider, spec)
        session.created.add(name)
        provider.create(spec)
        host, port = provider.ssh_endpoint(obj, address)
        project.set_machine(name, address=host, port=port)
        project.write_known_hosts()
        actions.append("created")
        state = provider.state(obj)
    if state == RUNNING and not actions and _update_folders(session, name, provider, box, address, restart):
        from vbox_cli.machines.down import HALT_TIMEOUT

        events.phase(name, Phase.HALTING, "to apply the synced folders")
        provider.halt(obj, HALT_TIMEOUT)
        actions.append("restarted")
        state = provider.state(obj)
    steps = session.machines[name].provision
    plan = incremental.plan(session, name, steps, in_place=in_place) if provision else incremental.Plan([])
    if plan.restore:  # a step changed: back to the snapshot before it, the steps from there run again
        from vbox_cli.machines.snapshots import go_back

        go_back(session, name, plan.restore)
        state = provider.state(obj)
        actions.append(f"back to {incremental.describe(plan)}")
    if state != RUNNING:
        boot(session, name, box, address)
        if "restarted" not in actions:
            actions.append("started")
    live = _apply_live(session, name, provider, box, address)
    tried_live = live is not None
    if not actions:
        for line in drift.drift(name, settings, project.machine_state(name)):
            if line.startswith("provision needed") or (tried_live and line.startswith(("reload needed", "disk "))):
                continue  # up runs those steps itself; what a restart would apply was said
            events.warning(f"{name}: the Envfile changed: {line}", name)
    if forwards or record.get("ports"):  # made again at every up: a host restart loses them
        ports.apply(session, name, project.machine_state(name)["address"], forwards or [])
    todo = plan.todo
    if todo and barrier is not None:
        barrier.wait(name)  # the machines it depends on are provisioned first
    if todo or actions:  # a machine just started is ready once SSH answers
        from providers.cloudinit import IDENTITY as CLOUD_INIT

        run_steps(session, name, steps, todo, settle=bool(actions) and box.meta.identity == CLOUD_INIT, plan=plan)
        if todo:
            actions.append("provisioned")
    watch_folders(session, name, provider, session.spec(name, box, address))
    project.set_machine(name, last_up=_now())
    fire(session, name, "after", verb)
    events.phase(name, Phase.READY, address)
    return ", ".join(actions + ([live] if live else [])) or "nothing to do"


def boot(session, name: str, box, address: str) -> None:
    """Start the created, stopped machine with the Envfile's settings (its bridges made
    first); records what `status` compares the Envfile with."""
    from vbox_cli.machines import drift

    session.events.phase(name, Phase.STARTING)
    spec = session.spec(name, box, address)
    _ensure_bridges(session, name, spec)
    said = session.provider(name).start(spec)
    if isinstance(said, str) and said:  # how it started, where a provider says (a KVM machine's warm start)
        session.events.note(f"{name}: {said}", name)
    settings = session.machines[name].model_dump(mode="json", exclude={"name"})
    session.project.set_machine(name, applied=drift.applied(settings))


def _apply_live(session, name: str, provider, box, address: str) -> str | None:
    """A running machine whose cpus, memory or disk in the Envfile differ from what it has
    gets them live where its provider can (providers/base.py LiveChange), finished by
    commands in the machine; says what was applied and what takes a restart. None when
    it did not try; else what it did for the summary ("" for nothing)."""
    import shlex

    from providers.base import RUNNING, Capability, supports

    project = session.project
    obj = project.object_name(name)
    record = project.machine_state(name)
    machine = session.machines[name]
    has = {**{k: v for k, v in (record.get("applied") or {}).items() if k in ("cpus", "memory")},
           **({"disk": record["disk"]} if isinstance(record.get("disk"), int) else {})}
    was = {key: value for key, value in has.items() if value != getattr(machine, key)}
    if not was or provider.state(obj) != RUNNING:
        return None
    spec = session.spec(name, box, address)
    if not supports(provider, Capability.LIVE, spec):
        return None  # the drift says what a restart applies
    change = provider.change_live(spec, was)
    if change.guest:
        conn = session.connect(name)
        try:
            for command in change.guest:
                lines: list[str] = []
                if conn.run(f"sudo -n sh -c {shlex.quote(command)}", lines.append) != 0:
                    session.events.warning(f"{name}: in the machine, finishing the change failed: "
                                           f"{' '.join(lines[-3:]) or 'no output'}", name)
        finally:
            conn.close()

    def keep(state: dict) -> None:
        entry = state["machines"].setdefault(name, {})
        entry.setdefault("applied", {}).update({k: v for k, v in change.applied.items() if k != "disk"})
        if "disk" in change.applied:
            entry["disk"] = change.applied["disk"]

    project.update_state(keep)
    if change.done:
        session.events.note(f"{name}: applied live (no restart): {', '.join(change.done)}", name)
    for item in change.later:
        session.events.warning(f"{name}: not applied live: {item}; `env reload {name}` applies it", name)
    for item in change.refused:
        session.events.warning(f"{name}: not applied: {item}", name)
    return f"changed live ({', '.join(k for k in was if k in change.applied)})" if change.applied else ""


def _update_folders(session, name: str, provider, box, address: str, restart: bool) -> bool:
    """A running machine gets folders added, changed or removed in the Envfile, live where
    its provider can; True when it must restart for them (and `restart` allows it)."""
    from providers.base import Capability, NeedsRestart, supports

    spec = session.spec(name, box, address)
    if not supports(provider, Capability.FOLDERS, spec):
        return False
    try:
        done = provider.update_folders(spec)
    except NeedsRestart as exc:
        if restart:
            session.events.note(f"{exc.message}: restarting it (--restart-if-needed)", name)
            return True
        session.events.warning(f"{exc.message}: {exc.hint}", name)
        return False
    if done:
        session.events.note(f"{name}: synced folders changed in the Envfile: {done}, live", name)
    return False


def _ensure_bridges(session, name: str, spec) -> None:
    """The Open vSwitch bridges the machine joins, made where vbox may make them."""
    from providers import ovs

    for bridge in sorted({net.bridge for net in spec.networks if net.kind == "ovs"}):
        with _BRIDGES:  # machines start in parallel
            if ovs.ensure(bridge):
                session.events.note(f"made the Open vSwitch bridge {bridge} (removed by destroy once unused)", name)


def watch_folders(session, name: str, provider, spec) -> None:
    """Changes made on this host reach the machine's inotify: by themselves (LXC), or
    through a folder watcher (vbox_cli/folderwatch.py) where the provider says they do not."""
    from vbox_cli import folderwatch

    source = provider.folder_event_source(spec.object_name) if spec.folders else None
    if source is not None:
        folders = [(str(share.source), share.target) for share in spec.folders]
        if folderwatch.ensure(session.project, name, session.ssh_target(name), folders, source):
            session.events.note(f"{name}: watching its synced folders here for its inotify", name)
    else:
        folderwatch.stop(session.project, name)


def say_accel(session, provider, spec) -> None:
    from providers.base import Capability, supports
    from providers.registry import info

    if supports(provider, Capability.ACCEL, spec):
        accel, why = provider.accel_for(spec)
        label = dict(info(provider.name).accel_labels).get(accel, accel)
        session.events.note(f"{spec.machine.name}: using {label}: {why}", spec.machine.name)
