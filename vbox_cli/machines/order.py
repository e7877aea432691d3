"""`depends_on`: which machines come with the ones named, in which order they are handed
to the runner, and the barrier that holds a machine's provisioning until the machines it
depends on are provisioned (they all boot at once before that)."""

from __future__ import annotations

import threading

from vbox_cli.errors import VboxError
from vbox_cli.events import Phase


def with_dependencies(machines: dict, names: list[str]) -> list[str]:
    """`names` and, before them, every machine they depend on (through others too)."""
    wanted: list[str] = []

    def add(name: str) -> None:
        if name in wanted:
            return
        for other in machines[name].depends_on:
            if other in machines:
                add(other)
        wanted.append(name)

    for name in names:
        add(name)
    return wanted


def dependencies_first(machines: dict, names: list[str]) -> list[str]:
    """`names` reordered so that each comes after those of them it depends on (a cycle
    is refused at validate). The runner starts machines in this order, so a machine that
    waits holds no worker that one it waits for needs."""
    chosen = set(names)
    return [n for n in with_dependencies(machines, names) if n in chosen]


class Barrier:
    """Each machine's steps wait until the machines it depends on (of those this command
    handles) have finished theirs; a machine whose dependency failed is not provisioned."""

    def __init__(self, session, names: list[str]):
        self.session = session
        self._needs = {n: [d for d in session.machines[n].depends_on if d in names] for n in names}
        self._done = {n: threading.Event() for n in names}
        self._failed: set[str] = set()
        self._scheduled: set[str] = set()
        self._lock = threading.Lock()

    def schedule(self, names: list[str]) -> list[str]:
        """These machines are handed to the runner now (`up` hands this host's first, then
        the guests of other hosts); returns them, dependencies first."""
        with self._lock:
            self._scheduled |= set(names)
        return dependencies_first(self.session.machines, names)

    def finished(self, name: str, ok: bool) -> None:
        """The runner is done with `name`: the machines waiting for it go on."""
        with self._lock:
            if not ok:
                self._failed.add(name)
        self._done[name].set()

    def wait(self, name: str) -> None:
        """Before `name` runs its steps; raises when one it depends on failed."""
        needs = self._needs.get(name, [])
        with self._lock:
            later = [d for d in needs if d not in self._scheduled]
        if later:  # a guest of another host that comes up after this machine: it cannot wait for it
            raise VboxError(f"{name}: not provisioned: it depends on {later[0]}, which comes up after it "
                            "(a machine of another host)", hint=f"`env up {later[0]}`, then `env provision {name}`")
        pending = [d for d in needs if not self._done[d].is_set()]
        if pending:
            self.session.events.phase(name, Phase.WAITING, f"for {', '.join(pending)} to be provisioned")
        for other in needs:
            self._done[other].wait()
        failed = [d for d in needs if d in self._failed]
        if failed:
            raise VboxError(f"{name}: not provisioned, because {failed[0]}, which it depends on, failed",
                            hint=f"once {failed[0]} is fixed, `env up` provisions {name} too")
