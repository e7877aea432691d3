"""`status`: each machine's state, asked of the hypervisor (never a cached state)."""

from __future__ import annotations

from vbox_cli.errors import VboxError


def status(project, machines: dict[str, dict]) -> list[dict]:
    """One row per machine of the Envfile (settings as plain dicts, from the cache),
    then any of the project's machines the Envfile does not declare."""
    from vbox_cli.machines.down import leftovers
    from vbox_cli.machines.drift import drift
    from vbox_cli.machines.placement import Placements

    state = project.load_state()["machines"]
    placements = Placements(project, machines)
    rows = []
    for name, settings in machines.items():
        record = state.get(name, {})
        try:
            machine_state = _state(placements.provider(name), project.object_name(name))
        except VboxError as exc:  # a provider this vbox does not have, or a hypervisor that does not answer
            machine_state = f"unknown: {exc.message}"
        rows.append({
            "name": name, "provider": settings["provider"], "state": machine_state,
            "address": _where(record), "host": record.get("host", ""), "box": settings["box"],
            "box_digest": record.get("box_digest", ""),
            "drift": drift(name, settings, record),  # how it differs from the Envfile now, and what applies it
        })
    for machine, provider, obj in leftovers(project, machines, state):
        rows.append({"name": machine, "provider": provider.name,
                     "state": provider.state(obj) + " (not in the Envfile)", "address": _where(state.get(machine, {})),
                     "host": "", "box": "", "box_digest": "", "drift": []})
    return rows


def _state(provider, obj: str) -> str:
    """running, stopped, not created; or suspended (stopped, its next start resumes it)."""
    from providers.base import STOPPED, Capability, supports

    state = provider.state(obj)
    if state == STOPPED and supports(provider, Capability.SUSPEND) and provider.suspended(obj):
        return "suspended"
    return state


def _where(record: dict) -> str:
    address, port = record.get("address", ""), record.get("port", 22)
    return address if port == 22 or not address else f"{address}:{port}"


def prune_box_users(store, box_name: str) -> list[str]:
    """Drop the records of machines that no longer exist (a project folder deleted
    without `env destroy`); returns their names."""
    from providers.base import NOT_CREATED
    from providers.registry import REGISTRY, get

    dropped = []
    for machine_id, info in store.user_records(box_name).items():
        provider_name = info.get("provider")
        if provider_name not in REGISTRY:
            continue  # an older record: keep it, --force overrides
        try:
            gone = get(provider_name).state(machine_id) == NOT_CREATED
        except VboxError:
            continue  # the hypervisor cannot say: keep the record
        if gone:
            store.remove_user(box_name, machine_id)
            dropped.append(machine_id)
    return dropped
