"""A fake provider, network and SSH for unit tests of the orchestration (vbox_cli/machines/).

`World` plays the hypervisor: it outlives a Session, as LXC and libvirt outlive a vbox
process, so a test can kill one `up` midway and run the next. It keeps the Provider
contract of providers/base.py (a creation cut short is not a machine; create on such a
remnant removes it first) and records every call, so tests can check order. Failures
and kills are injected per (operation, machine).
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass, field
from pathlib import Path

from providers.base import NOT_CREATED, RUNNING, STOPPED, ProviderBase


class Killed(BaseException):
    """The vbox process died here (SIGKILL): nothing after this line of vbox runs."""


@dataclass
class World:
    machines: dict[str, dict] = field(default_factory=dict)  # object name -> {"state", "project", "machine", ...}
    networks: dict[str, dict] = field(default_factory=dict)  # network name -> {"subnet", "dns"}
    calls: list[tuple[str, str]] = field(default_factory=list)  # (operation, object or network)
    commands: dict[str, list[str]] = field(default_factory=dict)  # machine -> commands run over "SSH"
    fail: dict[tuple[str, str], str] = field(default_factory=dict)  # (operation, machine) -> message
    kill: set[tuple[str, str]] = field(default_factory=set)  # (point, machine): the process dies there
    clock: itertools.count = field(default_factory=itertools.count)
    timeline: list[str] = field(default_factory=list)  # "point:machine", in the order they happened
    network_going: dict[str, bool] = field(default_factory=dict)  # object -> what destroy was told

    def hit(self, point: str, machine: str) -> None:
        from vbox_cli.errors import VboxError

        self.timeline.append(f"{point}:{machine}")

        if (point, machine) in self.kill:
            self.kill.discard((point, machine))
            raise Killed(f"killed at {point} of {machine}")
        if (point, machine) in self.fail:
            message, _, details = self.fail[(point, machine)].partition("\n")
            raise VboxError(message, hint="the full log: /var/log/fake.log", details=details or None)


WORLD = World()


class FakeNetworkHost:
    key = "local"
    remote = False
    shown = "fake libvirt"

    def plan_network(self, project, avoid=()):
        from providers.network import NetworkPlan, bridge_name, network_name

        state = project.load_state().get("network", {})
        subnet = state.get("subnet") or "10.250.0.0/24"
        if not state.get("subnet"):
            project.update_state(lambda s: s.setdefault("network", {}).update(subnet=subnet))
        return NetworkPlan(network_name(project.id), bridge_name(project.id), subnet, f"{project.id}.vbox")

    def ensure_network(self, plan, dns):
        WORLD.calls.append(("ensure_network", plan.name))
        WORLD.networks.setdefault(plan.name, {"subnet": plan.subnet})["dns"] = dict(dns)

    def remove_network(self, project_id):
        WORLD.calls.append(("remove_network", f"vbox-{project_id}"))
        WORLD.hit("remove_network", project_id)
        return WORLD.networks.pop(f"vbox-{project_id}", None) is not None

    def close(self):
        pass


class FakeProvider(ProviderBase):
    name = "lxc"
    label = "fake machine"
    network_host = FakeNetworkHost()

    def _machine(self, object_name: str) -> str:
        return WORLD.machines.get(object_name, {}).get("machine", object_name.rsplit("-", 1)[-1])

    def state(self, object_name):
        entry = WORLD.machines.get(object_name)
        if entry is None or not entry.get("complete"):
            return NOT_CREATED
        return entry["state"]

    def create(self, spec):
        name = spec.machine.name
        WORLD.calls.append(("create", spec.object_name))
        if spec.object_name in WORLD.machines:  # a creation cut short: remove it first
            del WORLD.machines[spec.object_name]
        WORLD.hit("create", name)
        WORLD.machines[spec.object_name] = {"state": STOPPED, "project": spec.project_id, "machine": name,
                                            "address": spec.address, "host_key": spec.host_key_public,
                                            "complete": False, "memory": spec.machine.memory}
        WORLD.hit("create-midway", name)
        WORLD.machines[spec.object_name]["complete"] = True

    def start(self, spec):
        WORLD.calls.append(("start", spec.object_name))
        WORLD.hit("start", spec.machine.name)
        WORLD.machines[spec.object_name].update(state=RUNNING, started_from=spec.box.version,
                                                resumed=WORLD.machines[spec.object_name].pop("suspended", False))

    def apply_resources(self, spec):
        WORLD.machines[spec.object_name]["memory"] = spec.machine.memory

    def halt(self, object_name, timeout=30):
        WORLD.calls.append(("halt", object_name))
        WORLD.hit("halt", self._machine(object_name))
        if object_name in WORLD.machines:
            WORLD.machines[object_name]["state"] = STOPPED
        return True

    def destroy(self, object_name, network_going=False):
        WORLD.calls.append(("destroy", object_name))
        WORLD.network_going[object_name] = network_going
        WORLD.hit("destroy", self._machine(object_name))
        WORLD.machines.pop(object_name, None)

    def ssh_endpoint(self, object_name, address):
        return address, 22

    def console_log(self, object_name):
        return None

    def objects(self, prefix):
        return sorted(n for n in WORLD.machines if n.startswith(prefix))

    def owned(self, project_id):
        return {e["machine"]: n for n, e in WORLD.machines.items() if e.get("project") == project_id}

    def leaks(self, prefix):
        return []

    # snapshots: the "disk" is what was run over SSH in the machine
    def snapshots(self, object_name):
        from providers.base import Snapshot

        saved = WORLD.machines.get(object_name, {}).get("snapshots", {})
        return [Snapshot(name, entry["created"], entry["running"]) for name, entry in saved.items()]

    def snapshot_save(self, object_name, name):
        from providers.base import Snapshot

        machine = self._machine(object_name)
        WORLD.calls.append(("snapshot_save", object_name))
        WORLD.hit("snapshot_save", machine)
        entry = {"created": float(next(WORLD.clock)), "running": WORLD.machines[object_name]["state"] == RUNNING,
                 "disk": list(WORLD.commands.get(machine, []))}
        WORLD.machines[object_name].setdefault("snapshots", {})[name] = entry
        return Snapshot(name, entry["created"], entry["running"])

    def snapshot_restore(self, object_name, name):
        from vbox_cli.errors import VboxError

        WORLD.calls.append(("snapshot_restore", object_name))
        if WORLD.machines[object_name]["state"] == RUNNING:
            raise VboxError("restored into a running machine")
        WORLD.commands[self._machine(object_name)] = list(WORLD.machines[object_name]["snapshots"][name]["disk"])

    def snapshot_delete(self, object_name, name):
        WORLD.calls.append(("snapshot_delete", object_name))
        del WORLD.machines[object_name]["snapshots"][name]


class FakeConnection:
    """An SSH connection that records commands; running an uploaded file that says FAIL fails."""

    def __init__(self, machine: str):
        self.machine = machine
        self.files: dict[str, bytes] = {}

    def run(self, command, on_line):
        WORLD.hit("ssh-run", self.machine)
        WORLD.commands.setdefault(self.machine, []).append(command)
        on_line(f"ran on {self.machine}")
        failing = any(path in command and b"FAIL" in data for path, data in self.files.items())
        return 3 if failing else 0

    def upload(self, data, path, mode):
        self.files[path] = data
        WORLD.commands.setdefault(self.machine, []).append(f"upload {path}: {data.decode(errors='replace')}")

    def close(self):
        pass


def fake_connect(target, timeout, console_log, stopped=None):
    entry = next((e for e in WORLD.machines.values() if e.get("address") == target.host), None)
    assert entry is not None and entry["state"] == RUNNING, f"SSH to {target.name}, which is not running"
    assert target.host_key == entry["host_key"], "SSH must check the host key vbox made for the machine"
    WORLD.hit("connect", target.name)
    return FakeConnection(target.name)


def is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def project_files(folder: Path, envfile: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Envfile").write_text(envfile)
    return folder / "Envfile"


class UnreachableProvider(FakeProvider):
    """A provider whose hypervisor does not answer (libvirtd stopped)."""

    name = "kvm"

    def _down(self, *args, **kwargs):
        from vbox_cli.errors import VboxError

        raise VboxError("cannot reach libvirt at qemu:///system: Failed to connect socket",
                        hint="run `env doctor --fix` to start libvirtd")

    state = create = start = halt = destroy = objects = owned = _down


class NoSnapshotsProvider(FakeProvider):
    """A provider that keeps no snapshots (as Xen's)."""

    def _unsupported(self, capability, spec):
        from providers.base import Capability

        return "it keeps none" if capability == Capability.SNAPSHOTS else None


def _suspend(self, object_name):
    WORLD.calls.append(("suspend", object_name))
    WORLD.machines[object_name].update(state=STOPPED, suspended=True)


def _suspended(self, object_name):
    return bool(WORLD.machines.get(object_name, {}).get("suspended")) and self.state(object_name) == STOPPED


FakeProvider.suspend = _suspend
FakeProvider.suspended = _suspended
