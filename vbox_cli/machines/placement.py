"""Where each machine lives and which network it joins: resolved once per command, then
read by every step (each re-derivation would be a chance to disagree).

A machine's placement is its provider instance on its host (this one, a remote libvirt,
or a machine of the same Envfile: providers/remote.py) and the host whose project
network it joins. Addresses are allocated once for every machine of the Envfile and kept
in the project's state; a network's subnet is chosen once per host and kept there too.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from vbox_cli.errors import VboxError

from providers.network import FIRST_STATIC, LAST_STATIC

MAX_MACHINES = LAST_STATIC - FIRST_STATIC + 1


@dataclass(frozen=True)
class Placement:
    name: str
    provider: object  # providers.base.Provider
    access: object | None  # providers.remote.HostAccess; None: this host, the provider's default

    @property
    def remote(self) -> bool:
        """On another host: reached through it (or through a machine of the Envfile not up yet)."""
        return self.access is not None and (self.access.remote or self.access.pending)

    @property
    def pending(self) -> bool:
        return self.access is not None and self.access.pending

    @property
    def host_machine(self) -> str | None:
        return self.access.machine if self.access is not None else None

    @property
    def network_host(self):
        return self.provider.network_host

    @property
    def where(self) -> str:
        """For people and the state record: "" for this host, else the Envfile's `host`."""
        return self.access.shown if self.remote else ""


class Placements:
    """The placements of one command. `machines` are Machine models or the cached settings
    dicts of the read-only verbs."""

    def __init__(self, project, machines: dict):
        self.project = project
        self.machines = machines
        self._placed: dict[str, Placement] = {}
        self._plans: dict[str, object] = {}  # network host key -> NetworkPlan
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> Placement:
        with self._lock:
            if name not in self._placed:
                self._placed[name] = self._resolve(name)
            return self._placed[name]

    def _resolve(self, name: str) -> Placement:
        from providers.registry import get
        from providers.remote import machine_access, setting

        access = machine_access(self.project, self.machines, name)
        return Placement(name, get(setting(self.machines[name], "provider"), access), access)

    def refresh(self, names) -> None:
        """Resolve these again: their host machines have come up since (they were pending)."""
        with self._lock:
            for name in names:
                self._placed.pop(name, None)

    def provider(self, name: str):
        return self[name].provider

    # -- networks and addresses ----------------------------------------------------
    def network(self, name: str):
        """The project network machine `name` joins (a NetworkPlan), or None."""
        host = self[name].network_host
        if host is None:
            return None
        with self._lock:
            if host.key not in self._plans:
                avoid = tuple(plan.subnet for plan in self._plans.values()) + self._recorded_local()
                self._plans[host.key] = host.plan_network(self.project, avoid if host.remote else ())
            return self._plans[host.key]

    def _recorded_local(self) -> tuple[str, ...]:
        subnet = self.project.load_state().get("network", {}).get("subnet")
        return (subnet,) if subnet else ()

    def same_network(self, name: str) -> list[str]:
        """Every machine of the Envfile whose network is on the same host as `name`'s."""
        host = self[name].network_host
        if host is None:
            return []
        return [n for n in self.machines if not self[n].pending and self[n].network_host is not None
                and self[n].network_host.key == host.key]

    def addresses(self, names: list[str]) -> dict[str, str]:
        """The stable address of each machine on the network it joins ("" without one)."""
        indexes = self.address_indexes()
        found = {}
        for name in names:
            plan = self.network(name)
            found[name] = plan.address(indexes[name]) if plan is not None else ""
        return found

    def address_indexes(self) -> dict[str, int]:
        """An index for every machine of the Envfile, allocated once and kept in the state."""
        indexes: dict[str, int] = {}

        def allocate(state: dict) -> None:
            records = state["machines"]
            taken = {r["address_index"] for r in records.values() if "address_index" in r}
            for name in self.machines:
                record = records.setdefault(name, {})
                if "address_index" not in record:
                    free = next((i for i in range(FIRST_STATIC, LAST_STATIC + 1) if i not in taken), None)
                    if free is None:
                        raise VboxError(f"no addresses left on the project network ({MAX_MACHINES} machines at most)")
                    record["address_index"] = free
                    taken.add(free)
                indexes[name] = record["address_index"]

        self.project.update_state(allocate)
        return indexes

    def network_hosts(self, names) -> dict[str, tuple[object, list[str]]]:
        """host key -> (network host, the machines of `names` whose network is there)."""
        found: dict[str, tuple[object, list[str]]] = {}
        for name in names:
            host = self[name].network_host
            if host is not None:
                found.setdefault(host.key, (host, []))[1].append(name)
        return found
