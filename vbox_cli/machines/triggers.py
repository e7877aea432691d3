"""Triggers: commands the Envfile runs before or after a verb acts on a machine.

In a machine (`run_in` and `shell`): over SSH, as root there, like a provisioning step.
On this host (`run`): the one thing an Envfile may run on the host, so it is guarded.
It runs as the user who ran env (not as root when env runs through sudo), in the
project folder, with the machines' addresses in its environment; and env asks before a
host trigger runs for the first time, listing each command. What was accepted is kept
outside every project, in vbox's home (a project cannot carry its own approval): a
changed command is asked about again. `--yes` accepts (CI).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from vbox_cli.errors import UsageError, VboxError
from vbox_cli.hostrun import User, invoking_user

APPROVALS = "approved-triggers.json"
MAX_APPROVALS = 4 * 1024**2


# -- which triggers, and their approval ----------------------------------------------


@dataclass(frozen=True)
class HostCommand:
    """Something of the Envfile that runs on this host: a host trigger, an Ansible step."""

    machine: str
    shown: str  # how the question lists it
    verbs: tuple[str, ...]  # the commands that may run it
    fingerprint: str  # what was accepted: a change is asked about again


def host_commands(machines: dict) -> list[HostCommand]:
    found = []
    for name, machine in machines.items():
        for t in machine.triggers:
            if t.on_host:
                found.append(HostCommand(name, f"{t.when} {t.verb}: {t.run}", (t.verb,), _digest(f"{t.when} {t.verb}",
                                                                                                   t.run)))
        for step in machine.provision:
            playbook = getattr(step, "ansible", None)
            if playbook is not None:
                found.append(HostCommand(name, f"provisioning: ansible-playbook {playbook} (Ansible runs the "
                                               "playbook's code on this host too)",
                                         ("up", "provision", "reload"), _digest("ansible", playbook)))
    return found


def _digest(kind: str, text: str) -> str:
    return hashlib.sha256(f"{kind}\0{text}".encode()).hexdigest()


def _approvals_path() -> Path:
    from vbox_cli.paths import vbox_home

    return vbox_home() / APPROVALS


def _load_approvals() -> dict:
    from vbox_cli.files import read_regular

    try:
        data = json.loads(read_regular(_approvals_path(), MAX_APPROVALS))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # unreadable: everything is asked again
    return data if isinstance(data, dict) else {}


def _key(project_dir: Path, user: User) -> str:
    return f"{os.path.realpath(project_dir)}\0{user.uid}"


def record_approval(project_dir: Path, commands: list[HostCommand], user: User) -> None:
    from vbox_cli.files import atomic_write

    approvals = _load_approvals()
    approvals[_key(project_dir, user)] = sorted({c.fingerprint for c in commands})
    path = _approvals_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(approvals, indent=1, sort_keys=True) + "\n", 0o600)


def approve(loaded, verb: str, yes: bool, interactive: bool, confirm) -> None:
    """Before a command runs host triggers none has accepted yet: ask (`confirm(text)` ->
    bool) on a terminal, take --yes, refuse otherwise. Only when one of them is for `verb`."""
    commands = host_commands(loaded.machines)
    if not any(verb in c.verbs for c in commands):
        return  # nothing of this command runs on the host: no account, no file read
    user = invoking_user()
    seen = set(_load_approvals().get(_key(loaded.project_dir, user), []))
    pending = [c for c in commands if c.fingerprint not in seen]
    if not any(verb in c.verbs for c in pending):
        return
    listing = "\n".join(f"  {c.machine}, {c.shown}" for c in pending)
    where = f"as {user.name}, in {loaded.project_dir}"
    if not yes:
        if not interactive:
            raise UsageError(f"the Envfile has commands to run on this host that were not accepted here ({where}):\n"
                             f"{listing}",
                             hint="run the command on a terminal to be asked, or pass --yes to accept them")
        if not confirm(f"The Envfile asks to run these commands on this host, {where}:\n{listing}\n"
                       "Run them, now and whenever they are unchanged?"):
            raise VboxError("the Envfile's host commands were not accepted: nothing was done",
                            hint="read them in the Envfile (triggers); remove them, or accept them")
    record_approval(loaded.project_dir, commands, user)


# -- running them ---------------------------------------------------------------------


def fire(session, name: str, when: str, verb: str) -> None:
    """Run machine `name`'s triggers for `when` ("before"/"after") `verb`, in order. A
    failure raises: a `before` trigger stops the verb for this machine."""
    for trigger in session.machines[name].triggers if name in session.machines else ():
        if trigger.when != when or trigger.verb != verb:
            continue
        label = f"{when}-{verb} trigger"
        if trigger.on_host:
            what = f"run: {_first_line(trigger.run)}"
            session.events.note(f"{name}: {label}: {what}", name)
            status = _run_on_host(session, name, trigger, verb, when)
        else:
            what = f"in {trigger.run_in}: {_first_line(trigger.shell)}"
            session.events.note(f"{name}: {label}: {what}", name)
            status = _run_in_machine(session, name, trigger)
            if status is None:
                continue
        if status != 0:
            done = f"{verb} done, but " if when == "after" else ""
            raise VboxError(f"{name}: {done}its {label} ({what}) failed with exit status {status}",
                            hint="its output is above" if when == "after" else
                            f"nothing of `{verb}` was done to {name}; fix the command and run it again")


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")[:60]


def addresses(session) -> dict[str, str]:
    """VBOX_ADDRESS_<MACHINE> for each machine with an address (upper case, '-' as '_')."""
    found = {}
    for machine, record in session.project.load_state()["machines"].items():
        if record.get("address") and machine in session.machines:
            found[f"VBOX_ADDRESS_{re.sub(r'[^A-Z0-9]', '_', machine.upper())}"] = record["address"]
    return found


def _run_on_host(session, name: str, trigger, verb: str, when: str) -> int:
    from vbox_cli import hostrun

    user = invoking_user()
    env = hostrun.environment(user, {
        "VBOX_PROJECT": session.project.id, "VBOX_PROJECT_DIR": str(session.loaded.project_dir),
        "VBOX_MACHINE": name, "VBOX_VERB": verb, "VBOX_WHEN": when, **addresses(session)})
    return hostrun.run(["/bin/sh", "-c", trigger.run], session.loaded.project_dir, user, env,
                       lambda line: session.events.output(name, line))
def _run_in_machine(session, name: str, trigger) -> int | None:
    """Its exit status, or None when the machine is not running (said, and skipped)."""
    import shlex

    from providers.base import RUNNING
    from provisioners.steps import work_dir

    target = trigger.run_in
    if session.provider(target).state(session.project.object_name(target)) != RUNNING:
        session.events.warning(f"{name}: {target} is not running: its trigger ({trigger.when} {trigger.verb}) "
                               "did not run", name)
        return None
    conn = session.connect(target)
    try:
        path = f"{work_dir(conn)}/trigger-{hashlib.sha256(trigger.shell.encode()).hexdigest()[:12]}.sh"
        conn.upload(trigger.shell.encode(), path, 0o700)
        return conn.run(f"sudo -n -H /bin/sh -e {shlex.quote(path)}", lambda line: session.events.output(name, line))
    finally:
        conn.close()
