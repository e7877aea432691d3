"""Bringing a project's machines up, down and away. The core of up/halt/destroy:
it reports through `Events` and never prints.

The hypervisor is the truth for what exists and runs; .vbox/state.json adds what it
cannot hold. Every step is ordered so that a process killed at any point leaves
something the next `up` or `destroy` handles: a machine's record (with the host key
vbox made for it) is written before the machine is made, and a machine whose record
is missing is not trusted but made anew.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

from vbox_cli.errors import UsageError, VboxError

HALT_TIMEOUT = 30.0


@dataclass
class Events:
    phase: Callable[[str, str], None] = lambda machine, text: None
    output: Callable[[str, str], None] = lambda machine, line: None
    note: Callable[[str], None] = lambda text: None


@dataclass
class Result:
    machine: str
    ok: bool
    action: str  # what was done: "created", "started", "provisioned", "nothing to do", ...
    error: VboxError | None = None
    seconds: float = 0.0


@dataclass
class Session:
    """One command's view of a project: the Envfile, the state, the providers."""

    project: object  # vbox_cli.project.Project
    loaded: object  # vbox_cli.envfile.load.LoadedEnvfile
    events: Events = field(default_factory=Events)
    accel: str | None = None  # --accel: overrides the Envfile's accel for this command

    @property
    def machines(self) -> dict:
        return self.loaded.machines

    def select(self, names: list[str], autostart_only: bool = False) -> list[str]:
        unknown = [n for n in names if n not in self.machines]
        if unknown:
            raise UsageError(f"no machine named {', '.join(map(repr, unknown))} in {self.loaded.path}",
                             hint="machines: " + ", ".join(self.machines))
        if names:
            return names
        return [n for n, m in self.machines.items() if m.autostart or not autostart_only]

    def provider(self, name: str):
        import providers

        return providers.get(self.machines[name].provider, self.access(name))

    def access(self, name: str):
        """Where a machine's libvirt is (providers/remote.py); None: this host, always."""
        from providers.remote import machine_access

        access = machine_access(self.project, self.machines, name)
        machine = self.machines[name]
        if access is None and machine.host:
            raise UsageError(f"{name}: `host` is for kvm and xen machines "
                             f"({machine.provider} machines run on this host)",
                             hint=f"remove `host` from [machines.{name}] in {self.loaded.path}")
        return access

    def host_machine(self, name: str) -> str | None:
        """The machine of this Envfile that hosts `name`, if one does."""
        access = self.access(name)
        return access.machine if access is not None else None

    def remote(self, name: str) -> bool:
        access = self.access(name)
        return access is not None and (access.remote or access.pending)

    @property
    def uses_network(self) -> bool:
        """Whether any machine of the Envfile joins the project network on this host."""
        return any(not self.remote(n) and self.provider(n).uses_project_network for n in self.machines)

    def network_for(self, name: str):
        """The project network a machine joins: this host's, or the one on its remote host
        (a subnet of its own, chosen once and kept in the state)."""
        if not self.remote(name):
            return self.network_plan
        from providers.network import plan_on

        access = self.access(name)
        return plan_on(self.project, access.key, self.provider(name).conn, self.network_plan)

    # -- addresses and the network ---------------------------------------------
    def addresses(self, names: list[str]) -> dict[str, str]:
        """The stable addresses of `names` (allocated once for every machine of the
        Envfile), each on the network it joins: a remote host must be up."""
        indexes = self._address_indexes()
        local_network = self.uses_network
        return {name: self.network_for(name).address(indexes[name])
                if (local_network or self.remote(name)) else "" for name in names}

    def _address_indexes(self) -> dict[str, int]:
        from providers.network import FIRST_STATIC, LAST_STATIC

        indexes: dict[str, int] = {}

        def allocate(state: dict) -> None:
            records = state["machines"]
            taken = {r["address_index"] for r in records.values() if "address_index" in r}
            for name in self.machines:
                record = records.setdefault(name, {})
                if "address_index" not in record:
                    free = next((i for i in range(FIRST_STATIC, LAST_STATIC + 1) if i not in taken), None)
                    if free is None:
                        raise VboxError("no addresses left on the project network (98 machines at most)")
                    record["address_index"] = free
                    taken.add(free)
                indexes[name] = record["address_index"]

        self.project.update_state(allocate)
        return indexes

    @cached_property
    def network_plan(self):
        from providers.network import plan

        return plan(self.project, self.conn)

    @cached_property
    def conn(self):
        """The system libvirt, which holds the project network."""
        from providers.libvirt_conn import connect

        return connect()

    # -- building a machine's spec ------------------------------------------------
    def spec(self, name: str, box, address: str, host_key: tuple[str, str] | None = None):
        from providers.base import MachineSpec

        # without the project network (a user's libvirt session) a machine has no address there
        net = self.network_for(name) if (self.uses_network or self.remote(name)) else None
        record = self.project.machine_state(name)
        machine = self.machines[name]
        if self.accel:
            machine = machine.model_copy(update={"accel": self.accel})
        console = self.project.state_dir / "console"
        console.mkdir(parents=True, exist_ok=True)
        return MachineSpec(
            project_id=self.project.id, object_name=self.project.object_name(name), machine=machine,
            box=box, address=address, gateway=net.gateway if net else "", network=net.name if net else "",
            bridge=net.bridge if net else "", domain=net.domain if net else "",
            user=box.meta.get("user", "vbox"), authorized_key=self.project.ensure_client_key(),
            host_key_private=host_key[0] if host_key else "",
            host_key_public=host_key[1] if host_key else record.get("host_key", ""),
            index=list(self.machines).index(name), console_log=console / f"{name}.log",
        )

    def ssh_target(self, name: str):
        from provisioners.ssh import Target

        record = self.project.machine_state(name)
        if not record.get("host_key") or not record.get("address"):
            raise VboxError(f"{name}: vbox has no record of this machine's address and host key",
                            hint=f"`env destroy {name}` then `env up {name}`")
        return Target(name=name, host=record["address"], port=record.get("port", 22),
                      user=record.get("user", "vbox"), client_key=self.project.client_key,
                      host_key=record["host_key"], via=self._via(name))

    def _via(self, name: str):
        """SSH to a guest of a remote host goes through that host."""
        from provisioners.ssh import Target

        access = self.access(name)
        if access is None or not access.remote:
            return None
        if access.machine:
            return self.ssh_target(access.machine)
        return Target(name=access.ssh_host, host=access.ssh_host, port=access.ssh_port,
                      user=access.ssh_user or "", client_key=Path(access.key_file) if access.key_file else None,
                      host_key="", known_hosts=Path(access.known_hosts) if access.known_hosts else None)


# -- up --------------------------------------------------------------------------


def up(session: Session, names: list[str], jobs: int | None = None, provision: bool = True) -> list[Result]:
    from boxes.store import BoxStore

    selected = session.select(names, autostart_only=not names)
    if not selected:
        return []  # nothing to bring up: make nothing, not even the network
    for name in list(selected):  # a machine's host, when it is a machine of this Envfile, comes too
        host = session.host_machine(name)
        if host and host not in selected:
            selected.insert(0, host)
    _preflight(session, selected)
    store = BoxStore()
    boxes = {}
    for name in selected:
        box_name = session.machines[name].box
        if box_name not in boxes:
            boxes[box_name] = store.get(box_name)
    session.project.ensure_client_key()
    # first the machines of this host (a Xen host among them), then the guests of remote hosts
    first = [n for n in selected if not session.remote(n)]
    later = [n for n in selected if session.remote(n)]
    results = []
    if first:
        addresses = session.addresses(first)
        if session.uses_network:
            from providers.network import ensure

            ensure(session.conn, session.network_plan, {n: a for n, a in addresses.items() if a})
        results += _parallel(session, first, lambda name: _up_one(
            session, name, boxes[session.machines[name].box], addresses[name], store, provision), jobs)
    if later:
        _preflight(session, later)  # their hosts are up now
        addresses = session.addresses(later)
        _ensure_remote_networks(session, later)
        results += _parallel(session, later, lambda name: _up_one(
            session, name, boxes[session.machines[name].box], addresses[name], store, provision), jobs)
    return results


def _preflight(session: Session, names: list[str]) -> None:
    """An unavailable provider, or one that cannot run here, fails before anything is made."""
    from providers.base import SupportsPreflight

    for name in names:
        provider = session.provider(name)
        if isinstance(provider, SupportsPreflight):
            provider.preflight(name)


def _ensure_remote_networks(session: Session, names: list[str]) -> None:
    """The project network on each remote host, with DNS entries for the machines there."""
    from providers.network import ensure

    done = set()
    for name in names:
        key = session.access(name).key
        if key not in done:
            done.add(key)
            on_host = [n for n in session.machines if session.remote(n) and session.access(n).key == key]
            ensure(session.provider(name).conn, session.network_for(name), session.addresses(on_host))


def _parallel(session: Session, names: list[str], work: Callable[[str], str], jobs: int | None) -> list[Result]:
    """Run work(name) for each machine at once (at most `jobs`). Its return is what was
    done; an error fails that machine only, and the others finish."""

    def one(name: str) -> Result:
        started = time.monotonic()
        try:
            return Result(name, True, work(name), seconds=time.monotonic() - started)
        except VboxError as exc:
            error = exc
        except Exception as exc:  # a bug: say so, and let the other machines finish
            error = VboxError(f"{name}: internal error: {type(exc).__name__}: {exc}")
        session.events.phase(name, "failed")
        return Result(name, False, "failed", error, time.monotonic() - started)

    if len(names) <= 1:
        return [one(n) for n in names]
    with ThreadPoolExecutor(max_workers=jobs or len(names)) as pool:
        return list(pool.map(one, names))


def _up_one(session: Session, name: str, box, address: str, store, provision: bool) -> str:
    from providers.base import NOT_CREATED, RUNNING
    from vbox_cli.sshkeys import new_ed25519

    provider = session.provider(name)
    project = session.project
    obj = project.object_name(name)
    events = session.events
    state = provider.state(obj)
    record = project.machine_state(name)
    actions = []
    if state != NOT_CREATED and not record.get("host_key"):
        events.phase(name, "found a machine vbox has no record of: making it anew")
        provider.destroy(obj)
        state = NOT_CREATED
    if state == NOT_CREATED:
        events.phase(name, f"creating from {box.name} {box.version}")
        private, public = new_ed25519(f"{obj} host key")
        keep = {"address_index": record.get("address_index")}
        project.update_state(lambda s: s["machines"].__setitem__(name, {
            **keep, "host_key": public, "address": address, "user": box.meta.get("user", "vbox"),
            "provider": provider.name, "box": box.name, "box_version": box.version, "box_digest": box.digest,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "provisioned": [],
        }))
        store.add_user(box.name, obj, {"project": str(project.folder), "machine": name, "provider": provider.name})
        spec = session.spec(name, box, address, (private, public))
        _say_accel(session, provider, spec)
        provider.create(spec)
        host, port = provider.ssh_endpoint(obj, address)
        project.set_machine(name, address=host, port=port)
        project.write_known_hosts()
        actions.append("created")
        state = provider.state(obj)
    spec = session.spec(name, box, address)
    if state != RUNNING:
        events.phase(name, "starting")
        provider.start(spec)
        actions.append("started")
    steps = session.machines[name].provision
    todo = _steps_to_run(project, name, steps, force=False) if provision else []
    if todo or actions:  # a machine just started is ready once SSH answers
        events.phase(name, "waiting for SSH")
        _provision(session, name, provider, steps, todo)
        if todo:
            actions.append("provisioned")
    project.set_machine(name, last_up=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    events.phase(name, "ready")
    return ", ".join(actions) or "nothing to do"


def _say_accel(session: Session, provider, spec) -> None:
    from providers.base import SupportsAccel

    if isinstance(provider, SupportsAccel):
        accel, why = provider.accel_for(spec)
        label = {"kvm": "KVM", "xen": "Xen"}.get(accel, "TCG (software emulation)")
        session.events.note(f"{spec.machine.name}: using {label}: {why}")


def _steps_to_run(project, name: str, steps, force: bool) -> list[int]:
    from provisioners.steps import step_ids

    done = set(project.machine_state(name).get("provisioned", []))
    ids = step_ids(steps)
    return [i for i, step in enumerate(steps) if force or step.run == "always" or ids[i] not in done]


def _provision(session: Session, name: str, provider, steps, todo: list[int]) -> None:
    """Connect (waiting for SSH up to boot_timeout) and run the steps `todo`, recording
    the run="once" ones as they succeed."""
    from provisioners.ssh import wait_for_ssh
    from provisioners.steps import run_step, step_ids, summary, work_dir

    obj = session.project.object_name(name)
    client = wait_for_ssh(session.ssh_target(name), session.machines[name].boot_timeout, provider.console_log(obj))
    try:
        ids = step_ids(steps)
        work = work_dir(client) if todo else ""
        for index in todo:
            step = steps[index]
            session.events.phase(name, f"provisioning {index + 1}/{len(steps)}: {summary(step)}")
            run_step(client, work, name, index, step, session.loaded.project_dir,
                     lambda line: session.events.output(name, line))
            if step.run == "once":
                session.project.update_state(lambda s: _record_step(s, name, ids[index]))
    finally:
        client.close()


def _record_step(state: dict, name: str, step_id: str) -> None:
    done = state["machines"].setdefault(name, {}).setdefault("provisioned", [])
    if step_id not in done:
        done.append(step_id)


def provision(session: Session, names: list[str], force: bool, jobs: int | None = None) -> list[Result]:
    from providers.base import RUNNING

    def run(name: str) -> str:
        provider = session.provider(name)
        if provider.state(session.project.object_name(name)) != RUNNING:
            raise VboxError(f"{name} is not running", hint=f"`env up {name}` brings it up and provisions it")
        steps = session.machines[name].provision
        todo = _steps_to_run(session.project, name, steps, force)
        if not todo:
            return "nothing to do (run=\"once\" steps ran already; --force runs them)"
        _provision(session, name, provider, steps, todo)
        session.events.phase(name, "provisioned")
        return f"provisioned ({len(todo)} step{'s' if len(todo) != 1 else ''})"

    return _parallel(session, session.select(names), run, jobs)


# -- halt and destroy ---------------------------------------------------------------


def halt(session: Session, names: list[str], jobs: int | None = None) -> list[Result]:
    from providers.base import RUNNING

    def stop(name: str) -> str:
        provider = session.provider(name)
        obj = session.project.object_name(name)
        if provider.state(obj) != RUNNING:
            return "not running"
        session.events.phase(name, "halting")
        clean = provider.halt(obj, HALT_TIMEOUT)
        return "halted" if clean else f"powered off (no clean shutdown in {HALT_TIMEOUT:g} s)"

    return _in_order(session, session.select(names), stop, jobs)


def _in_order(session: Session, names: list[str], work, jobs: int | None) -> list[Result]:
    """Guests of remote hosts first, then this host's machines (their hosts among them)."""
    remote = [n for n in names if n in session.machines and session.remote(n)]
    local = [n for n in names if n not in remote]
    results = _parallel(session, remote, work, jobs) if remote else []
    _close(session, remote)
    return results + (_parallel(session, local, work, jobs) if local else [])


def _close(session: Session, remote: list[str]) -> None:
    """Before their hosts go: closing a connection to a host that is gone hangs."""
    for name in remote:
        session.provider(name).close()


def leftovers(project, declared_names) -> list[tuple[object, str]]:
    """(provider, object name) of this project's machines that the Envfile does not declare."""
    import providers

    declared = {project.object_name(n) for n in declared_names}
    return [(provider, obj) for provider in providers.all_available()
            for obj in provider.objects(f"vbox-{project.id}-") if obj not in declared]


def destroy(session: Session, names: list[str], jobs: int | None = None) -> list[Result]:
    """Destroy the named machines, or everything of the project (leftovers, the
    network, .vbox/) when no names are given."""
    from boxes.store import BoxStore

    everything = not names
    store = BoxStore()
    project = session.project
    # machine name -> (provider, object): the named ones, or all of the Envfile and the leftovers
    targets = {name: (session.provider(name), project.object_name(name)) for name in session.select(names)}
    if everything:
        for provider, obj in leftovers(project, session.machines):
            session.events.note(f"removing {obj}, which the Envfile does not declare")
            targets[obj.removeprefix(f"vbox-{project.id}-")] = (provider, obj)

    def remove(name: str) -> str:
        provider, obj = targets[name]
        session.events.phase(name, "destroying")
        access = session.access(name) if name in session.machines else None
        if not (access and access.pending):  # a guest whose host machine is gone went with it
            provider.destroy(obj)
        for box in store.boxes():
            store.remove_user(box.name, obj)
        (project.state_dir / "console" / f"{name}.log").unlink(missing_ok=True)
        project.forget_machine(name)
        return "destroyed"

    if not everything:
        results = _in_order(session, list(targets), remove, jobs)
        project.write_known_hosts()
        return results
    # the guests of remote hosts, and the project network on those hosts, go first
    remote = [n for n in targets if n in session.machines and session.remote(n)]
    results = _parallel(session, remote, remove, jobs) if remote else []
    _remove_remote_networks(session, remote)
    for name in remote:
        del targets[name]
    # Everything: the network goes while the machines go (the kernel lets a bridge go
    # with ports still on it), then .vbox/.
    from providers.network import network_name
    from providers.network import remove as remove_network

    with ThreadPoolExecutor(max_workers=1) as side:
        network = side.submit(remove_network, session.conn, network_name(project.id)) if session.uses_network else None
        results += _parallel(session, list(targets), remove, jobs)
        if network is not None and network.result():
            session.events.note(f"removed network {network_name(project.id)}")
    _remove_state_dir(project)
    return results


def _remove_remote_networks(session: Session, names: list[str]) -> None:
    from providers.network import network_name
    from providers.network import remove as remove_network

    seen = set()
    for name in names:
        access = session.access(name)
        if access.key in seen or access.pending:
            continue
        seen.add(access.key)
        try:
            if remove_network(session.provider(name).conn, network_name(session.project.id)):
                session.events.note(f"removed network {network_name(session.project.id)} on {access.shown}")
        except VboxError as exc:
            session.events.note(f"could not remove the network on {access.shown}: {exc.message}")
    _close(session, names)


def _remove_state_dir(project) -> None:
    import shutil

    from vbox_cli.project import LOCK_FILE

    if not project.state_dir.is_dir():
        return
    for entry in project.state_dir.iterdir():
        if entry.name == LOCK_FILE:
            continue  # held by this command; removed last
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    (project.state_dir / LOCK_FILE).unlink(missing_ok=True)
    try:
        project.state_dir.rmdir()
    except OSError:
        pass


# -- status ---------------------------------------------------------------------------


def status(project, machines: dict[str, dict]) -> list[dict]:
    """One row per machine of the Envfile (settings as plain dicts, from the cache),
    then any of the project's machines the Envfile does not declare."""
    import providers

    state = project.load_state()["machines"]
    rows = []
    for name, settings in machines.items():
        record = state.get(name, {})
        try:
            machine_state = providers.for_machine(project, machines, name).state(project.object_name(name))
        except VboxError as exc:  # a provider this vbox does not have, or a hypervisor that does not answer
            machine_state = f"unknown: {exc.message}"
        rows.append({
            "name": name, "provider": settings["provider"],
            "state": machine_state,
            "address": _where(record), "box": settings["box"],
            "box_digest": record.get("box_digest", ""),
        })
    for provider, obj in leftovers(project, machines):
        rows.append({"name": obj.removeprefix(f"vbox-{project.id}-"), "provider": provider.name,
                     "state": provider.state(obj) + " (not in the Envfile)", "address": "", "box": "",
                     "box_digest": ""})
    return rows


def _where(record: dict) -> str:
    address, port = record.get("address", ""), record.get("port", 22)
    return address if port == 22 or not address else f"{address}:{port}"


def prune_box_users(store, box_name: str) -> list[str]:
    """Drop the records of machines that no longer exist (a project folder deleted
    without `env destroy`); returns their names."""
    import providers
    from providers.base import NOT_CREATED

    dropped = []
    for machine_id, info in store.user_records(box_name).items():
        provider_name = info.get("provider")
        if provider_name not in providers.REGISTRY:
            continue  # an older record: keep it, --force overrides
        try:
            gone = providers.get(provider_name).state(machine_id) == NOT_CREATED
        except VboxError:
            continue  # the hypervisor cannot say: keep the record
        if gone:
            store.remove_user(box_name, machine_id)
            dropped.append(machine_id)
    return dropped
