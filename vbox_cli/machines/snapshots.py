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


def _snapshotting(session, name: str):
    """(provider, object name) of a created machine whose provider can snapshot it."""
    from providers.base import NOT_CREATED, Capability, require

    provider = require(session.provider(name), Capability.SNAPSHOTS, name)
    obj = session.project.object_name(name)
    if provider.state(obj) == NOT_CREATED:
        raise VboxError(f"{name} is not created", hint=f"`env up {name}` makes it")
    return provider, obj


def listing(session, names: list[str]) -> list[dict]:
    """One row per snapshot of each machine (oldest first); a machine that cannot have
    snapshots, or has none, is left out; one that is not created too."""
    from providers.base import NOT_CREATED, Capability, supports

    rows = []
    for name in names:
        provider = session.provider(name)
        obj = session.project.object_name(name)
        if not supports(provider, Capability.SNAPSHOTS) or provider.state(obj) == NOT_CREATED:
            continue
        records = _records(session, name)
        for snap in provider.snapshots(obj):
            record = records.get(snap.name)
            rows.append({"machine": name, "name": snap.name, "created": snap.created,
                         "taken_while": "running" if snap.running else "stopped",
                         "provisioned_steps": len(record["provisioned"]) if record else None})
    return rows


def _records(session, name: str) -> dict:
    found = session.project.machine_state(name).get(RECORD, {})
    return {k: v for k, v in found.items() if isinstance(v, dict) and isinstance(v.get("provisioned"), list)}


def save(session, name: str, snapshot: str | None = None) -> str:
    from providers.base import RUNNING, check_snapshot_name

    provider, obj = _snapshotting(session, name)
    snapshot = check_snapshot_name(snapshot or default_name())
    if any(snap.name == snapshot for snap in provider.snapshots(obj)):
        raise VboxError(f"{name} has a snapshot named {snapshot} already",
                        hint=f"`env snapshot delete {name} {snapshot}` first, or choose another name")
    running = provider.state(obj) == RUNNING
    if running and getattr(provider, "snapshot_flush", "guest") == "guest":
        session.events.phase(name, Phase.SNAPSHOTTING, "flushing its file systems")
        _sync_inside(session, name)
    session.events.phase(name, Phase.SNAPSHOTTING, snapshot)
    started = time.monotonic()
    snap = provider.snapshot_save(obj, snapshot)
    done = list(session.project.machine_state(name).get("provisioned", []))
    session.project.update_state(lambda s: s["machines"].setdefault(name, {}).setdefault(RECORD, {}).__setitem__(
        snapshot, {"provisioned": done, "created": snap.created}))
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
    from providers.base import RUNNING
    from vbox_cli import folderwatch
    from vbox_cli.machines import ports

    provider, obj = _snapshotting(session, name)
    snaps = provider.snapshots(obj)
    if not snaps:
        raise VboxError(f"{name} has no snapshots", hint=f"`env snapshot save {name}` makes one")
    if snapshot is None:
        snapshot = snaps[-1].name
    elif snapshot not in {snap.name for snap in snaps}:
        raise VboxError(f"{name} has no snapshot named {snapshot!r}",
                        hint="its snapshots: " + ", ".join(snap.name for snap in snaps))
    was_running = provider.state(obj) == RUNNING
    if was_running:
        session.events.phase(name, Phase.HALTING, "powering off to restore")
        folderwatch.stop(session.project, name)
        provider.halt(obj, 0)
        ports.remove(session, name, provider)
    session.events.phase(name, Phase.RESTORING, snapshot)
    provider.snapshot_restore(obj, snapshot)
    record = _records(session, name).get(snapshot)
    if record is not None:
        session.project.set_machine(name, provisioned=list(record["provisioned"]))
    else:
        session.events.warning(f"{name}: vbox has no record of the steps run before {snapshot} (not saved by "
                               "`env snapshot save`): the record of provisioning is kept as it was", name)
    if not was_running:
        session.events.phase(name, Phase.RESTORED, f"{snapshot} (stopped)")
        return f"restored {snapshot}"
    start(session, name)
    return f"restored {snapshot}, started"


def start(session, name: str) -> None:
    """Start a machine that exists again, from the box it was made from, without
    provisioning it; returns once SSH answers."""
    from vbox_cli.machines.up import ensure_networks, up_one

    box = session.made_from(name)
    address = session.placements.addresses([name])[name]
    ensure_networks(session, [name])
    up_one(session, name, box, address, provision=False, verb="restore")


def delete(session, name: str, snapshot: str) -> str:
    provider, obj = _snapshotting(session, name)
    if snapshot not in {snap.name for snap in provider.snapshots(obj)}:
        raise VboxError(f"{name} has no snapshot named {snapshot!r}", hint=f"`env snapshot list {name}`")
    session.events.phase(name, Phase.DELETING, snapshot)
    provider.snapshot_delete(obj, snapshot)
    session.project.update_state(lambda s: s["machines"].get(name, {}).get(RECORD, {}).pop(snapshot, None))
    session.events.phase(name, Phase.DELETED, snapshot)
    return f"deleted {snapshot}"
