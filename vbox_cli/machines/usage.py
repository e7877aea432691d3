"""`stats`: what each machine uses, from its provider (providers/stats.py), with CPU use
as a share of one CPU over a short sampling window."""

from __future__ import annotations

import time

from vbox_cli.errors import VboxError

WINDOW = 0.5  # seconds between the two CPU readings of one `env stats`


def sample(project, machines: dict[str, dict], names: list[str]) -> dict[str, tuple[str, object]]:
    """name -> (state, MachineStats or None, or why not)."""
    from providers.base import RUNNING, Capability, supports
    from vbox_cli.machines.placement import Placements

    placements = Placements(project, machines)
    found = {}
    for name in names:
        try:
            provider = placements.provider(name)
            obj = project.object_name(name)
            state = provider.state(obj)
            if state != RUNNING:
                found[name] = (state, None)
            elif not supports(provider, Capability.STATS):
                found[name] = (state, f"not for {provider.label}s")
            else:
                found[name] = (state, provider.stats(obj))
        except VboxError as exc:
            found[name] = (f"unknown: {exc.message}", None)
    return found


def rows(project, machines: dict[str, dict], names: list[str], previous: tuple | None = None,
         window: float = WINDOW) -> tuple[list[dict], tuple]:
    """One dict per machine, CPU use in percent of one CPU: against `previous` (the last
    sample of a --watch, with when it was taken) or over a fresh `window`. Returns the
    rows and (this sample, when it was taken)."""
    if previous is None:
        previous = (sample(project, machines, names), time.monotonic())
        time.sleep(window)
    before_all, taken_before = previous
    now = sample(project, machines, names)
    taken = time.monotonic()
    found = []
    for name in names:
        state, stats = now[name]
        row = {"name": name, "state": state, "cpu_percent": None}
        if isinstance(stats, str):
            row["note"] = stats
        elif stats is not None:
            row.update(stats.as_dict())
            before = before_all.get(name, (None, None))[1]
            if before is not None and not isinstance(before, str) and None not in (before.cpu_seconds,
                                                                                   stats.cpu_seconds):
                spent = max(0.0, stats.cpu_seconds - before.cpu_seconds)
                row["cpu_percent"] = round(100 * spent / max(taken - taken_before, 1e-3), 1)
        found.append(row)
    return found, (now, taken)
