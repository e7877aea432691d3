"""Drift: how a machine that exists differs from what its Envfile settings now say, and
what applies each difference. Compared with what vbox recorded when it made and last
started the machine (`applied` in its record), so it costs no call to the hypervisor.

Settings are the plain dicts of the validated-Envfile cache (`model_dump(mode="json")`),
which `status` reads without pydantic; `up` passes the same form.
"""

from __future__ import annotations

import hashlib
import json

APPLIED_AT_START = ("cpus", "memory", "networks", "hostname")  # taken at a (re)start: `env reload`


def applied(settings: dict) -> dict:
    """What a start takes from the settings, as recorded in the machine's record."""
    return {key: settings.get(key) for key in APPLIED_AT_START}


def step_id_of(step: dict) -> str:
    return hashlib.sha256(json.dumps(step, sort_keys=True).encode()).hexdigest()[:16]


def _size(value) -> str:
    if not isinstance(value, int):
        return str(value)
    for unit, size in (("G", 1024**3), ("M", 1024**2)):
        if value % size == 0:
            return f"{value // size}{unit}"
    return str(value)


def made_by_another(record: dict, provider: str | None) -> str | None:
    """The provider that made this machine, when it is not `provider` (the Envfile's
    `provider` changed after it was made); None otherwise (or when vbox made nothing)."""
    was = record.get("provider")
    return was if record.get("host_key") and isinstance(was, str) and provider and was != provider else None


def drift(name: str, settings: dict, record: dict) -> list[str]:
    """One line per difference, each saying what applies it; [] when the machine matches
    (or was never made)."""
    if not record.get("host_key"):
        return []
    found = []
    if was := made_by_another(record, settings.get("provider")):
        found.append(f"provider {was} -> {settings['provider']}: `env destroy {name}` and `env up {name}`")
    if record.get("box") and settings.get("box") != record["box"]:
        found.append(f"box {record['box']} -> {settings.get('box')}: `env destroy {name}` and `env up {name}`")
    elif settings.get("box_version") and record.get("box_version"):
        from boxes.versions import Constraint

        try:
            allowed = Constraint(settings["box_version"]).allows(record["box_version"])
        except ValueError:
            allowed = True
        if not allowed:
            found.append(f"box {record['box']} {record['box_version']} is not {settings['box_version']}: "
                         f"`env destroy {name}` and `env up {name}`")
    was = record.get("applied")
    if was:
        changed = []
        for key in APPLIED_AT_START:
            if was.get(key) != settings.get(key):
                changed.append(f"{key} {_size(was.get(key))} -> {_size(settings.get(key))}"
                               if key in ("cpus", "memory") else key)
        if changed:
            found.append(f"reload needed ({', '.join(changed)}): `env reload {name}`"
                         + (", or `env up` live where its provider can"
                            if any(was.get(k) != settings.get(k) for k in ("cpus", "memory")) else ""))
    if record.get("provider") == "lxc" and "unprivileged" in record \
            and bool(settings.get("unprivileged")) != record["unprivileged"]:
        found.append(f"unprivileged {str(record['unprivileged']).lower()} -> "
                     f"{str(bool(settings.get('unprivileged'))).lower()}: `env destroy {name}` and `env up {name}`")
    if isinstance(record.get("disk"), int) and settings.get("disk") not in (None, record["disk"]):
        found.append(f"disk {_size(record['disk'])} -> {_size(settings.get('disk'))}: `env up {name}` grows it live "
                     "where its provider can (a disk does not shrink)")
    done = set(record.get("provisioned") or [])
    seen: dict[str, int] = {}
    todo = 0
    for step in settings.get("provision") or []:
        digest = step_id_of(step)
        seen[digest] = seen.get(digest, 0) + 1
        if step.get("run", "once") == "once" and f"{digest}-{seen[digest]}" not in done:
            todo += 1
    if todo:
        found.append(f"provision needed ({todo} step{'s' if todo > 1 else ''} not run): `env provision {name}`")
    return found
