"""Incremental re-provisioning: a snapshot of the machine before its first step and after
each step, so that when a step (its settings, or a project file it reads) changes, the
machine goes back to the snapshot taken before the first changed step and the steps run
from there: not from the top, and not on top of what the old step left.

What a machine's disk holds is its `chain`, in its record: the content hash of each step
run on it, in order, since it was made (or since the snapshot it was restored to). The
snapshot at position N (`vbox-step-N`) is taken when the chain is exactly the first N
steps, and recorded with that chain; it is used only while the Envfile's first N steps
are those. A step whose position in the chain does not match the Envfile (changed,
removed, moved) is where the machine goes back to. A machine whose provider keeps no
snapshots, or that has no chain (made by an earlier vbox), is provisioned as before:
the steps not yet run, on top.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vbox_cli.errors import VboxError
from vbox_cli.events import Phase

PREFIX = "vbox-step-"  # the names of these snapshots; `env snapshot save` refuses names that start with it


def snapshot_name(position: int) -> str:
    return f"{PREFIX}{position}"


def chain_ids(session, steps) -> list[str]:
    """A content hash per step: its settings and the project files it reads (a repeated
    step counted, as step ids are)."""
    from vbox_cli.lockfile import step_hash

    ids, seen = [], {}
    for step in steps:
        digest = step_hash(step, session.loaded.project_dir).split()[-1][:16]
        seen[digest] = seen.get(digest, 0) + 1
        ids.append(f"{digest}-{seen[digest]}")
    return ids


@dataclass
class Plan:
    todo: list[int]  # the steps to run, in order
    restore: str | None = None  # the snapshot to go back to first
    position: int = 0  # the steps the machine keeps (from the snapshot, or as it is)
    chain: list[str] = field(default_factory=list)  # the content hashes of the Envfile's steps
    snapshots: bool = False  # a snapshot is taken after each step run


def plan(session, name: str, steps, force: bool = False, from_step: int | None = None,
         in_place: bool = False) -> Plan:
    """What `up` and `provision` do for the machine's steps."""
    from providers.base import Capability, a, supports
    from vbox_cli.machines.provision import steps_to_run

    provider = session.provider(name)
    plain = steps_to_run(session.project, name, steps, force)
    able = supports(provider, Capability.SNAPSHOTS)
    if from_step is not None:
        if not able:
            raise VboxError(f"{name}: --from needs snapshots, which {a(provider.label)} does not have: "
                            f"{provider.unsupported(Capability.SNAPSHOTS)}")
        if not 1 <= from_step <= len(steps):
            raise VboxError(f"{name}: --from {from_step}: it has {len(steps)} step{'s' if len(steps) != 1 else ''}")
    chain = session.project.machine_state(name).get("chain")
    if not able or not isinstance(chain, list):  # no snapshots, or made by an earlier vbox: as before
        return Plan(plain)
    ids = chain_ids(session, steps)
    if in_place or force:  # on top of what is there, the chain kept up to date
        return Plan(plain, position=len(chain), chain=ids, snapshots=not in_place)
    if from_step is not None:
        position = from_step - 1
    else:
        position = next((i for i, (had, now) in enumerate(zip(chain, ids)) if had != now), None)
        if position is None and len(chain) > len(ids):
            position = len(ids)  # steps were removed from the end: their effect goes
    if position is None or position >= len(chain):  # nothing changed, or only steps after those run
        return Plan(plain, position=len(chain), chain=ids, snapshots=True)
    snapshot = _snapshot_at(session, name, ids[:position])
    if snapshot is not None:
        return Plan(list(range(position, len(steps))), snapshot, position, ids, True)
    if from_step is not None:
        raise VboxError(f"{name}: there is no snapshot of it {_after(position)} with the Envfile's steps as they "
                        "are now", hint=f"`env provision {name} --from N` with an earlier N, or without --from")
    session.events.warning(f"{name}: step {position + 1} changed, and there is no snapshot of the machine "
                           f"{_after(position)}: the changed steps run on top of what the old ones left", name)
    return Plan(plain, position=len(chain), chain=ids, snapshots=True)


def describe(plan: Plan) -> str:
    return _after(plan.position)


def _after(position: int) -> str:
    return "before its first step" if position == 0 else f"after step {position}"


def _snapshot_at(session, name: str, chain: list[str]) -> str | None:
    """The name of the machine's snapshot of that chain, if the provider still has it."""
    from vbox_cli.machines.snapshots import RECORD

    snapshot = snapshot_name(len(chain))
    record = session.project.machine_state(name).get(RECORD, {}).get(snapshot)
    if not isinstance(record, dict) or record.get("chain") != chain:
        return None
    provider = session.provider(name)
    if snapshot not in {s.name for s in provider.snapshots(session.project.object_name(name))}:
        return None
    return snapshot


def ran(session, name: str, plan: Plan, index: int) -> list[str]:
    """The machine's chain once step `index` ran on it."""
    chain = list(session.project.machine_state(name).get("chain") or [])
    if chain[:index] == plan.chain[:index]:
        return plan.chain[:index + 1] + chain[index + 1:]
    return chain + [plan.chain[index]]


def keep(session, name: str, conn, position: int, plan: Plan) -> None:
    """A snapshot at `position` (steps run) when the machine is exactly those steps and
    has none that is: one of an older chain there is replaced. A snapshot that fails is
    said, not fatal: the next change of a step goes back to an earlier one."""
    from providers.base import RUNNING
    from vbox_cli.machines import snapshots

    chain = session.project.machine_state(name).get("chain")
    if not plan.snapshots or chain != plan.chain[:position] or _snapshot_at(session, name, chain) is not None:
        return
    provider = session.provider(name)
    obj = session.project.object_name(name)
    snapshot = snapshot_name(position)
    session.events.phase(name, Phase.PROVISIONING, f"snapshot {_after(position)}")  # part of provisioning
    try:
        if snapshot in {s.name for s in provider.snapshots(obj)}:
            provider.snapshot_delete(obj, snapshot)
        if getattr(provider, "snapshot_flush", "guest") == "guest" and provider.state(obj) == RUNNING:
            status = conn.run("sync", lambda line: None)
            if status != 0:
                raise VboxError(f"`sync` in the machine failed (exit status {status})")
        snapshots.record(session, name, provider.snapshot_save(obj, snapshot))
    except VboxError as exc:
        session.events.warning(f"{name}: no snapshot {_after(position)}: {exc.message}", name)


def tidy(session, name: str, steps: int) -> None:
    """Snapshots of positions past the Envfile's last step go (steps were removed)."""
    from vbox_cli.machines.snapshots import RECORD

    provider = session.provider(name)
    obj = session.project.object_name(name)
    for snap in provider.snapshots(obj):
        if snap.name.startswith(PREFIX) and snap.name[len(PREFIX):].isdigit() and int(snap.name[len(PREFIX):]) > steps:
            provider.snapshot_delete(obj, snap.name)
            session.project.update_state(lambda s: s["machines"].get(name, {}).get(RECORD, {}).pop(snap.name, None))


def last_complete(session, name: str) -> str | None:
    """The snapshot of the machine right after its last complete provisioning: the one
    at the furthest position along its chain."""
    from vbox_cli.machines.snapshots import RECORD

    record = session.project.machine_state(name)
    chain = record.get("chain") or []
    have = {s.name for s in session.provider(name).snapshots(session.project.object_name(name))}
    for position in range(len(chain), -1, -1):
        saved = record.get(RECORD, {}).get(snapshot_name(position))
        if snapshot_name(position) in have and isinstance(saved, dict) and saved.get("chain") == chain[:position]:
            return snapshot_name(position)
    return None


def restore(session, name: str) -> str:
    """`env restore`: the machine back to its snapshot after its last complete provisioning."""
    from vbox_cli.machines import snapshots

    snapshots.check_created(session, name)
    snapshot = last_complete(session, name)
    if snapshot is None:
        raise VboxError(f"{name} has no snapshot of its last provisioning",
                        hint="vbox takes them as steps run (from this version on, for providers that have snapshots)")
    return snapshots.restore(session, name, snapshot)
