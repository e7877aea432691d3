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
import subprocess
from dataclasses import dataclass
from pathlib import Path

from vbox_cli.errors import UsageError, VboxError

APPROVALS = "approved-triggers.json"
MAX_APPROVALS = 4 * 1024**2


@dataclass(frozen=True)
class User:
    """Who a host trigger runs as."""

    uid: int
    gid: int
    name: str
    home: str


def invoking_user() -> User:
    """The user who ran env: under sudo, the one who called sudo, not root."""
    import pwd

    uid = os.getuid()
    sudo_uid = os.environ.get("SUDO_UID", "")
    if os.geteuid() == 0 and sudo_uid.isdigit() and int(sudo_uid) != 0:
        uid = int(sudo_uid)
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        raise VboxError(f"user {uid}, who ran env, has no account here: its host triggers cannot run") from None
    return User(uid, entry.pw_gid, entry.pw_name, entry.pw_dir)


# -- which triggers, and their approval ----------------------------------------------


def host_triggers(machines: dict) -> list[tuple[str, object]]:
    """(machine, trigger) for every host trigger of the Envfile."""
    return [(name, t) for name, machine in machines.items() for t in machine.triggers if t.on_host]


def fingerprint(trigger) -> str:
    return hashlib.sha256(f"{trigger.when} {trigger.verb}\0{trigger.run}".encode()).hexdigest()


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


def unapproved(project_dir: Path, machines: dict, user: User) -> list[tuple[str, object]]:
    seen = set(_load_approvals().get(_key(project_dir, user), []))
    return [(name, t) for name, t in host_triggers(machines) if fingerprint(t) not in seen]


def record_approval(project_dir: Path, machines: dict, user: User) -> None:
    from vbox_cli.files import atomic_write

    approvals = _load_approvals()
    approvals[_key(project_dir, user)] = sorted({fingerprint(t) for _, t in host_triggers(machines)})
    path = _approvals_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(approvals, indent=1, sort_keys=True) + "\n", 0o600)


def approve(loaded, verb: str, yes: bool, interactive: bool, confirm) -> None:
    """Before a command runs host triggers none has accepted yet: ask (`confirm(text)` ->
    bool) on a terminal, take --yes, refuse otherwise. Only when one of them is for `verb`."""
    machines = loaded.machines
    user = invoking_user()
    pending = unapproved(loaded.project_dir, machines, user)
    if not pending or not any(t.verb == verb or (verb == "reload" and t.verb in ("halt", "up")) for _, t in pending):
        return
    listing = "\n".join(f"  {name}, {t.when} {t.verb}: {t.run}" for name, t in pending)
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
    record_approval(loaded.project_dir, machines, user)


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


def environment(session, name: str, verb: str, when: str, user: User) -> dict[str, str]:
    """The caller's environment, and who and where: VBOX_PROJECT, VBOX_PROJECT_DIR,
    VBOX_MACHINE, VBOX_VERB, VBOX_WHEN, and VBOX_ADDRESS_<MACHINE> for each machine with an
    address (upper case, '-' as '_')."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBOX_")}
    if user.uid != os.getuid():  # through sudo: the user's own identity, not root's
        env.update(HOME=user.home, USER=user.name, LOGNAME=user.name)
    env.update(VBOX_PROJECT=session.project.id, VBOX_PROJECT_DIR=str(session.loaded.project_dir),
               VBOX_MACHINE=name, VBOX_VERB=verb, VBOX_WHEN=when)
    for machine, record in session.project.load_state()["machines"].items():
        if record.get("address") and machine in session.machines:
            env[f"VBOX_ADDRESS_{re.sub(r'[^A-Z0-9]', '_', machine.upper())}"] = record["address"]
    return env


def _run_on_host(session, name: str, trigger, verb: str, when: str) -> int:
    user = invoking_user()
    as_user = {}
    if user.uid != os.getuid():
        as_user = {"user": user.uid, "group": user.gid, "extra_groups": os.getgrouplist(user.name, user.gid)}
    try:
        process = subprocess.Popen(["/bin/sh", "-c", trigger.run], cwd=session.loaded.project_dir,
                                   env=environment(session, name, verb, when, user), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **as_user)
    except OSError as exc:
        raise VboxError(f"{name}: its {when}-{verb} trigger could not start: {exc.strerror}") from None
    with process:
        for raw in process.stdout:
            session.events.output(name, raw.decode(errors="replace").rstrip("\n"))
    return process.wait()


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
