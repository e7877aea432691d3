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

        return providers.get(self.machines[name].provider)

    @property
    def uses_network(self) -> bool:
        """Whether any machine of the Envfile joins the project network."""
        return any(self.provider(n).uses_project_network for n in self.machines)

    # -- addresses and the network ---------------------------------------------
    def addresses(self) -> dict[str, str]:
        """A stable address for every machine of the Envfile, allocated once."""
        from providers.network import FIRST_STATIC, LAST_STATIC

        net = self.network_plan()
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
        return {name: net.address(index) for name, index in indexes.items()}

    def network_plan(self):
        from providers.network import plan

        if not hasattr(self, "_net"):
            self._net = plan(self.project, self.conn())
        return self._net

    def conn(self):
        from providers.libvirt_conn import connect

        if not hasattr(self, "_conn"):
            self._conn = connect()
        return self._conn

    # -- building a machine's spec ------------------------------------------------
    def spec(self, name: str, box, address: str, host_key: tuple[str, str] | None = None):
        from providers.base import MachineSpec

        from providers.network import NetworkPlan

        net = self.network_plan() if self.uses_network else NetworkPlan("", "", "0.0.0.0/24", "")
        record = self.project.machine_state(name)
        machine = self.machines[name]
        if self.accel:
            machine = machine.model_copy(update={"accel": self.accel})
        console = self.project.state_dir / "console"
        console.mkdir(parents=True, exist_ok=True)
        return MachineSpec(
            project_id=self.project.id, object_name=self.project.object_name(name), machine=machine,
            box=box, address=address, gateway=net.gateway if address else "", network=net.name, bridge=net.bridge,
            domain=net.domain,
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
                      host_key=record["host_key"])


# -- up --------------------------------------------------------------------------


def up(session: Session, names: list[str], jobs: int | None = None, provision: bool = True,
       force_provision: bool = False) -> list[Result]:
    from boxes.store import BoxStore
    from providers.base import SupportsPreflight

    selected = session.select(names, autostart_only=not names)
    for name in selected:  # an unavailable provider, or one that cannot run here, fails before anything is made
        provider = session.provider(name)
        if isinstance(provider, SupportsPreflight):
            provider.preflight(name)
    store = BoxStore()
    boxes = {}
    for name in selected:
        box_name = session.machines[name].box
        if box_name not in boxes:
            boxes[box_name] = store.get(box_name)
    if session.uses_network:
        from providers.network import ensure

        addresses = session.addresses()
        ensure(session.conn(), session.network_plan(), addresses)
    else:
        addresses = {n: "" for n in session.machines}
    session.project.ensure_client_key()

    def bring_up(name: str) -> Result:
        started = time.monotonic()
        try:
            action = _up_one(session, name, boxes[session.machines[name].box], addresses[name], store, provision,
                             force_provision)
            return Result(name, True, action, seconds=time.monotonic() - started)
        except VboxError as exc:
            session.events.phase(name, "failed")
            return Result(name, False, "failed", exc, time.monotonic() - started)
        except Exception as exc:  # a bug: fail this machine, let the others finish
            session.events.phase(name, "failed")
            error = VboxError(f"{name}: internal error: {type(exc).__name__}: {exc}")
            return Result(name, False, "failed", error, time.monotonic() - started)

    return _parallel(selected, bring_up, jobs)


def _parallel(names: list[str], work: Callable[[str], Result], jobs: int | None) -> list[Result]:
    if len(names) <= 1:
        return [work(n) for n in names]
    with ThreadPoolExecutor(max_workers=jobs or len(names)) as pool:
        return list(pool.map(work, names))


def _up_one(session: Session, name: str, box, address: str, store, provision: bool, force: bool) -> str:
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
        project.write_known_hosts()
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
    todo = _steps_to_run(project, name, steps, force) if provision else []
    if todo or actions:
        events.phase(name, "waiting for SSH")
        from provisioners.ssh import wait_for_ssh

        client = wait_for_ssh(session.ssh_target(name), session.machines[name].boot_timeout,
                              provider.console_log(obj))
        try:
            if todo:
                _provision(session, name, client, steps, todo)
                actions.append("provisioned")
        finally:
            client.close()
    project.set_machine(name, last_up=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    events.phase(name, "ready")
    return ", ".join(actions) or "nothing to do"


def _say_accel(session: Session, provider, spec) -> None:
    from providers.base import SupportsAccel

    if isinstance(provider, SupportsAccel):
        accel, why = provider.accel_for(spec)
        label = "KVM" if accel == "kvm" else "TCG (software emulation)"
        session.events.note(f"{spec.machine.name}: using {label}: {why}")


def _steps_to_run(project, name: str, steps, force: bool) -> list[int]:
    from provisioners.steps import step_ids

    done = set(project.machine_state(name).get("provisioned", []))
    ids = step_ids(steps)
    return [i for i, step in enumerate(steps) if force or step.run == "always" or ids[i] not in done]


def _provision(session: Session, name: str, client, steps, todo: list[int]) -> None:
    from provisioners.steps import run_step, step_ids, summary

    ids = step_ids(steps)
    for index in todo:
        step = steps[index]
        session.events.phase(name, f"provisioning {index + 1}/{len(steps)}: {summary(step)}")
        run_step(client, name, index, step, session.loaded.project_dir,
                 lambda line: session.events.output(name, line))
        if step.run == "once":
            session.project.update_state(lambda s: _record_step(s, name, ids[index]))


def _record_step(state: dict, name: str, step_id: str) -> None:
    done = state["machines"].setdefault(name, {}).setdefault("provisioned", [])
    if step_id not in done:
        done.append(step_id)


def provision(session: Session, names: list[str], force: bool, jobs: int | None = None) -> list[Result]:
    from providers.base import RUNNING
    from provisioners.ssh import wait_for_ssh

    selected = session.select(names)

    def run(name: str) -> Result:
        started = time.monotonic()
        obj = session.project.object_name(name)
        provider = session.provider(name)
        try:
            if provider.state(obj) != RUNNING:
                raise VboxError(f"{name} is not running", hint=f"`env up {name}` brings it up and provisions it")
            steps = session.machines[name].provision
            todo = _steps_to_run(session.project, name, steps, force)
            if not todo:
                return Result(name, True, "nothing to do (run=\"once\" steps ran already; --force runs them)")
            client = wait_for_ssh(session.ssh_target(name), session.machines[name].boot_timeout,
                                  provider.console_log(obj))
            try:
                _provision(session, name, client, steps, todo)
            finally:
                client.close()
            session.events.phase(name, "provisioned")
            return Result(name, True, f"provisioned ({len(todo)} step{'s' if len(todo) != 1 else ''})",
                          seconds=time.monotonic() - started)
        except VboxError as exc:
            return Result(name, False, "failed", exc, time.monotonic() - started)

    return _parallel(selected, run, jobs)


# -- halt and destroy ---------------------------------------------------------------


def halt(session: Session, names: list[str], jobs: int | None = None) -> list[Result]:
    from providers.base import RUNNING

    selected = session.select(names)

    def stop(name: str) -> Result:
        started = time.monotonic()
        provider = session.provider(name)
        obj = session.project.object_name(name)
        if provider.state(obj) != RUNNING:
            return Result(name, True, "not running")
        session.events.phase(name, "halting")
        clean = provider.halt(obj, HALT_TIMEOUT)
        return Result(name, True, "halted" if clean else f"powered off (no clean shutdown in {HALT_TIMEOUT:g} s)",
                      seconds=time.monotonic() - started)

    return _parallel(selected, stop, jobs)


def leftovers(session: Session) -> list[tuple[object, str]]:
    """(provider, object name) of this project's machines that the Envfile does not declare."""
    import providers

    prefix = f"vbox-{session.project.id}-"
    declared = {session.project.object_name(n) for n in session.machines}
    found = []
    for provider in providers.all_available():
        for obj in provider.objects(prefix):
            if obj not in declared:
                found.append((provider, obj))
    return found


def destroy(session: Session, names: list[str], jobs: int | None = None) -> list[Result]:
    """Destroy the named machines, or everything of the project (leftovers, the
    network, .vbox/) when no names are given."""
    from boxes.store import BoxStore

    everything = not names
    selected = session.select(names)
    store = BoxStore()
    project = session.project

    def remove(name: str, provider=None, obj: str | None = None) -> Result:
        started = time.monotonic()
        provider = provider or session.provider(name)
        obj = obj or project.object_name(name)
        session.events.phase(name, "destroying")
        try:
            provider.destroy(obj)
        except VboxError as exc:
            session.events.phase(name, "failed")
            return Result(name, False, "failed", exc, time.monotonic() - started)
        for box in store.boxes():
            store.remove_user(box.name, obj)
        (project.state_dir / "console" / f"{name}.log").unlink(missing_ok=True)
        project.forget_machine(name)
        return Result(name, True, "destroyed", seconds=time.monotonic() - started)

    if not everything:
        results = _parallel(selected, remove, jobs)
        project.write_known_hosts()
        return results
    # Everything: the machines, those the Envfile no longer declares, and the network,
    # all at once (the kernel lets a bridge go with ports still on it).
    from providers.network import network_name
    from providers.network import remove as remove_network

    prefix = f"vbox-{project.id}-"
    extra = leftovers(session)
    for _, obj in extra:
        session.events.note(f"removing {obj}, which the Envfile does not declare")
    with ThreadPoolExecutor(max_workers=jobs or (len(selected) + len(extra) + 1)) as pool:
        network = pool.submit(remove_network, session.conn(), network_name(project.id)) \
            if session.uses_network else None
        futures = [pool.submit(remove, name) for name in selected]
        futures += [pool.submit(remove, obj.removeprefix(prefix), provider, obj) for provider, obj in extra]
        results = [f.result() for f in futures]
        if network is not None and network.result():
            session.events.note(f"removed network {network_name(project.id)}")
    _remove_state_dir(project)
    return results


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


def _where(record: dict) -> str:
    address, port = record.get("address", ""), record.get("port", 22)
    return address if port == 22 or not address else f"{address}:{port}"


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
            machine_state = providers.get(settings["provider"]).state(project.object_name(name))
        except VboxError as exc:  # a provider this vbox does not have, or a hypervisor that does not answer
            machine_state = f"unknown: {exc.message}"
        rows.append({
            "name": name, "provider": settings["provider"],
            "state": machine_state,
            "address": _where(record), "box": settings["box"],
            "box_digest": record.get("box_digest", ""),
        })
    prefix = f"vbox-{project.id}-"
    declared = {project.object_name(n) for n in machines}
    for provider in providers.all_available():
        for obj in provider.objects(prefix):
            if obj not in declared:
                rows.append({"name": obj.removeprefix(prefix), "provider": provider.name,
                             "state": provider.state(obj) + " (not in the Envfile)", "address": "", "box": "",
                             "box_digest": ""})
    return rows


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
