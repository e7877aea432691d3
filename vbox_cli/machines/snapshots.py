"""`env snapshot`: save, restore, list and delete snapshots of a machine's disk (a
provider's Capability.SNAPSHOTS), with what vbox knew of the machine at that point: the
provisioning steps it had run. A restored machine is provisioned from there (its record
goes back with its disk), and a running machine is running again after a restore.

Disk only, with every provider: a restore boots the machine from the saved disk. Before a
running machine's disk is saved, its file systems are flushed: inside the machine (`sync`
over SSH) where the provider says that the machine's cache is its own (a VM), on this host
(freezing it) where it is this host's (a container).
"""

from __future__ import annotations

import time

from vbox_cli.errors import VboxError
from vbox_cli.events import Phase

RECORD = "snapshots"  # in a machine's record: snapshot name -> {"provisioned": [...], "created": ...}


def default_name() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def check_created(session, name: str):
    return _snapshotting(session, name)


def _snapshotting(session, name: str):
    """(provider, object name) of a created machine whose provider can snapshot it."""
    from providers.base import NOT_CREATED, Capability, require

    provider = require(session.provider(name), Capability.SNAPSHOTS, name)
    obj = session.project.object_name(name)
    if provider.state(obj) == NOT_CREATED:
        raise VboxError(f"{name} is not created", hint=f"`env up {name}` makes it")
    return provider, obj


def listing(session, names: list[str], everything: bool = False) -> list[dict]:
    """One row per snapshot of each machine (oldest first); a machine that cannot have
    snapshots, or has none, is left out; one that is not created too. vbox's own between
    provisioning steps only with `everything`."""
    from providers.base import NOT_CREATED, Capability, supports
    from vbox_cli.machines.incremental import PREFIX

    rows = []
    for name in names:
        provider = session.provider(name)
        obj = session.project.object_name(name)
        if not supports(provider, Capability.SNAPSHOTS) or provider.state(obj) == NOT_CREATED:
            continue
        records = _records(session, name)
        for snap in provider.snapshots(obj):
            if snap.name.startswith(PREFIX) and not everything:
                continue
            record = records.get(snap.name)
            rows.append({"machine": name, "name": snap.name, "created": snap.created,
                         "taken_while": "running" if snap.running else "stopped",
                         "provisioned_steps": len(record["provisioned"]) if record else None})
    return rows


def _records(session, name: str) -> dict:
    found = session.project.machine_state(name).get(RECORD, {})
    return {k: v for k, v in found.items() if isinstance(v, dict) and isinstance(v.get("provisioned"), list)}


def record(session, name: str, snap) -> None:
    """What vbox knows of the machine, kept beside its new snapshot: the steps run (and
    the chain of what its disk holds, vbox_cli/machines/incremental.py)."""
    machine = session.project.machine_state(name)
    saved = {"provisioned": list(machine.get("provisioned", [])), "created": snap.created}
    if isinstance(machine.get("chain"), list):
        saved["chain"] = list(machine["chain"])
    session.project.update_state(
        lambda s: s["machines"].setdefault(name, {}).setdefault(RECORD, {}).__setitem__(snap.name, saved))


def save(session, name: str, snapshot: str | None = None) -> str:
    from providers.base import RUNNING, check_snapshot_name
    from vbox_cli.machines.incremental import PREFIX

    provider, obj = _snapshotting(session, name)
    snapshot = check_snapshot_name(snapshot or default_name())
    if snapshot.startswith(PREFIX):
        raise VboxError(f"snapshot names that start with {PREFIX} are vbox's own (taken between provisioning steps)")
    if any(snap.name == snapshot for snap in provider.snapshots(obj)):
        raise VboxError(f"{name} has a snapshot named {snapshot} already",
                        hint=f"`env snapshot delete {name} {snapshot}` first, or choose another name")
    running = provider.state(obj) == RUNNING
    if running and getattr(provider, "snapshot_flush", "guest") == "guest":
        session.events.phase(name, Phase.SNAPSHOTTING, "flushing its file systems")
        _sync_inside(session, name)
    session.events.phase(name, Phase.SNAPSHOTTING, snapshot)
    started = time.monotonic()
    record(session, name, provider.snapshot_save(obj, snapshot))
    session.events.phase(name, Phase.SAVED, f"{snapshot} in {time.monotonic() - started:.2f} s")
    return f"saved {snapshot}" + (" (running)" if running else "")


def _sync_inside(session, name: str) -> None:
    conn = session.connect(name)
    try:
        status = conn.run("sync", lambda line: None)
    finally:
        conn.close()
    if status != 0:
        raise VboxError(f"{name}: `sync` in the machine failed (exit status {status}): nothing was saved")


def restore(session, name: str, snapshot: str | None = None) -> str:
    """The machine's disk back to `snapshot` (the newest without one), its provisioning
    record with it; a machine that was running is powered off first (what it had not
    saved is lost: the point of a restore) and started again."""
    from vbox_cli.machines.incremental import PREFIX

    provider, obj = _snapshotting(session, name)
    snaps = provider.snapshots(obj)
    own = [snap for snap in snaps if not snap.name.startswith(PREFIX)]  # not vbox's between steps
    if snapshot is None and not own:
        raise VboxError(f"{name} has no snapshots", hint=f"`env snapshot save {name}` makes one"
                        + (f"; `env restore {name}` returns it to its last provisioning" if snaps else ""))
    if snapshot is None:
        snapshot = own[-1].name
    elif snapshot not in {snap.name for snap in snaps}:
        raise VboxError(f"{name} has no snapshot named {snapshot!r}",
                        hint="its snapshots: " + (", ".join(snap.name for snap in own) or "none of its own"))
    if not go_back(session, name, snapshot):
        session.events.phase(name, Phase.RESTORED, f"{snapshot} (stopped)")
        return f"restored {snapshot}"
    restart(session, name)
    session.events.phase(name, Phase.READY, session.project.machine_state(name).get("address", ""))
    return f"restored {snapshot}, started"


def go_back(session, name: str, snapshot: str) -> bool:
    """The machine's disk and its records back to `snapshot`, the machine powered off
    first if it runs; True if it was running."""
    from providers.base import RUNNING
    from vbox_cli import folderwatch
    from vbox_cli.machines import ports

    provider = session.provider(name)
    obj = session.project.object_name(name)
    was_running = provider.state(obj) == RUNNING
    if was_running:
        session.events.phase(name, Phase.HALTING, "powering off to restore")
        folderwatch.stop(session.project, name)
        provider.halt(obj, 0)
        ports.remove(session, name, provider)
    session.events.phase(name, Phase.RESTORING, snapshot)
    provider.snapshot_restore(obj, snapshot)
    saved = _records(session, name).get(snapshot)
    if saved is None:
        session.events.warning(f"{name}: vbox has no record of the steps run before {snapshot} (not saved by "
                               "vbox): the record of provisioning is kept as it was", name)
        return was_running

    def put_back(state: dict) -> None:
        machine = state["machines"].setdefault(name, {})
        machine["provisioned"] = list(saved["provisioned"])
        if isinstance(saved.get("chain"), list):
            machine["chain"] = list(saved["chain"])
        else:
            machine.pop("chain", None)  # what its disk holds is not known step by step

    session.project.update_state(put_back)
    return was_running


def restart(session, name: str) -> None:
    """Start a machine that exists again, from the box it was made from, without
    provisioning it: its forwards, its folders' watcher; returns once SSH answers."""
    from vbox_cli.machines import ports
    from vbox_cli.machines.up import boot, ensure_networks, watch_folders

    box = session.made_from(name)
    address = session.placements.addresses([name])[name]
    ensure_networks(session, [name])
    boot(session, name, box, address)
    forwards = ports.plan(session, [name]).get(name)
    if forwards or session.project.machine_state(name).get("ports"):
        ports.apply(session, name, session.project.machine_state(name)["address"], forwards or [])
    session.events.phase(name, Phase.CONNECTING)
    session.connect(name).close()
    watch_folders(session, name, session.provider(name), session.spec(name, box, address))


def delete(session, name: str, snapshot: str) -> str:
    provider, obj = _snapshotting(session, name)
    if snapshot not in {snap.name for snap in provider.snapshots(obj)}:
        raise VboxError(f"{name} has no snapshot named {snapshot!r}", hint=f"`env snapshot list {name}`")
    session.events.phase(name, Phase.DELETING, snapshot)
    provider.snapshot_delete(obj, snapshot)
    session.project.update_state(lambda s: s["machines"].get(name, {}).get(RECORD, {}).pop(snapshot, None))
    session.events.phase(name, Phase.DELETED, snapshot)
    return f"deleted {snapshot}"
