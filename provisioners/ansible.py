"""Ansible against the project's machines: the inventory vbox makes (`env inventory`,
and each ansible step's), and running a playbook step.

The inventory has every machine that has been made: its address, port and user, the
project's key, and the SSH options of `env ssh-config` (the project's known_hosts with
the host key vbox made, strict checking, a ProxyCommand through a remote host): Ansible
checks host keys as vbox does. Groups come from the machines' ansible steps.

A playbook step runs ansible-playbook on this host, in the project folder, limited to
its machine, as the user who ran env (under sudo: with copies of the key and
known_hosts that user may read, in a private folder removed afterwards).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from vbox_cli.errors import VboxError

SSH_OPTIONS = ("IdentitiesOnly", "UserKnownHostsFile", "StrictHostKeyChecking", "HostKeyAlias", "ProxyCommand")
MISSING_HINT = ("install it into vbox's environment (pip install 'vbox-cli[ansible]'), or Debian's ansible-core "
                "(`env doctor --fix` does, for an Envfile with ansible steps)")


def playbook_command() -> str | None:
    """ansible-playbook beside vbox's Python (the [ansible] extra), else on PATH."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("ansible-playbook")


def _steps(machine) -> list:
    steps = machine.get("provision", ()) if isinstance(machine, dict) else machine.provision
    return [s for s in steps if (s.get("ansible") if isinstance(s, dict) else getattr(s, "ansible", None))]


def _groups(step) -> list[str]:
    return list(step.get("groups", ()) if isinstance(step, dict) else step.groups)


def inventory(project, machines: dict, records: dict) -> dict:
    """Ansible's inventory (JSON, which its YAML plugin reads) of the machines made so far.
    `machines`: Machine models or the cached settings dicts."""
    from providers.remote import machine_access
    from provisioners.openssh import endpoint

    hosts: dict[str, dict] = {}
    groups: dict[str, list[str]] = {}
    for name, machine in machines.items():
        record = records.get(name, {})
        if not (record.get("address") and record.get("host_key")):
            continue
        hosts[name] = host_vars(endpoint(project, name, record, machine_access(project, machines, name)))
        for step in _steps(machine):
            for group in _groups(step):
                if name not in groups.setdefault(group, []):
                    groups[group].append(name)
    children = {group: {"hosts": {name: {} for name in members}} for group, members in sorted(groups.items())}
    return {"all": {"hosts": hosts, **({"children": children} if children else {})}}


def host_vars(point) -> dict:
    options = dict(point.options())
    common = []
    for keyword in SSH_OPTIONS:
        if keyword in options:
            common += ["-o", f"{keyword}={options[keyword]}"]
    return {
        "ansible_host": options["HostName"],
        "ansible_port": int(options["Port"]),
        "ansible_user": options["User"],
        "ansible_ssh_private_key_file": point.key,
        "ansible_ssh_common_args": shlex.join(common),
        "ansible_python_interpreter": "/usr/bin/python3",
    }


def as_ini(data: dict) -> str:
    """The inventory in Ansible's INI form (values quoted as its INI parser splits them)."""
    lines = []
    for name, variables in data["all"]["hosts"].items():
        lines.append(" ".join([name, *(f"{key}={shlex.quote(str(value))}" for key, value in variables.items())]))
    for group, members in data["all"].get("children", {}).items():
        lines += ["", f"[{group}]", *members["hosts"]]
    return "\n".join(lines) + "\n"


# -- a playbook step ------------------------------------------------------------------


def run_playbook(step, ctx) -> int:
    from vbox_cli import hostrun
    from vbox_cli.files import project_file

    command = playbook_command()
    if command is None:
        raise VboxError(f"{ctx.machine}: ansible-playbook is not installed (provisioning step {ctx.index + 1} "
                        f"runs {step.ansible})", hint=MISSING_HINT)
    try:
        playbook = project_file(ctx.project_dir, step.ansible)
    except ValueError as exc:
        raise VboxError(f"{ctx.machine}: {exc}") from None
    if not playbook.is_file():
        raise VboxError(f"{ctx.machine}: no playbook {step.ansible!r} in the project")
    _ensure_python(ctx)
    user = hostrun.invoking_user()
    private = Path(tempfile.mkdtemp(prefix="vbox-ansible-"))
    try:
        data = ctx.inventory()
        if user.other:  # the project's key and known_hosts are root's: copies the user may read
            data = _with_copies(data, ctx.project_dir, private)
            os.chown(private, user.uid, user.gid)
            for path in private.iterdir():
                os.chown(path, user.uid, user.gid)
        (private / "inventory.json").write_text(json.dumps(data))
        argv = [command, "-i", str(private / "inventory.json"), "--limit", ctx.machine, str(playbook)]
        if step.extra_vars:
            argv += ["--extra-vars", json.dumps(step.extra_vars)]
        if step.privileged:
            argv.append("--become")
        env = hostrun.environment(user, {
            "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0", "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_LOCAL_TEMP": str(private / "tmp"), "ANSIBLE_SSH_CONTROL_PATH_DIR": str(private / "cp"),
            "PYTHONUNBUFFERED": "1"})
        failures: list[str] = []

        def line(text: str) -> None:
            if text.startswith(("fatal:", "failed:", "ERROR!")) or "FAILED!" in text:
                failures.append(text.strip())
            ctx.on_line(text)

        status = hostrun.run(argv, ctx.project_dir, user, env, line)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    if status != 0 and failures:
        from provisioners.steps import StepFailed

        raise StepFailed(ctx.machine, ctx.index, f"ansible: {step.ansible}", status, failures[0][:300])
    return status


def _with_copies(data: dict, project_dir: Path, private: Path) -> dict:
    """The inventory with the project's key and known_hosts replaced by copies in `private`."""
    from vbox_cli.paths import STATE_DIR

    text = json.dumps(data)
    for name in ("id_ed25519", "known_hosts"):
        source = project_dir / STATE_DIR / name
        if source.is_file():
            copy = private / name
            shutil.copyfile(source, copy)
            os.chmod(copy, 0o600)
            text = text.replace(json.dumps(str(source))[1:-1], json.dumps(str(copy))[1:-1])
    return json.loads(text)


def _ensure_python(ctx) -> None:
    """Ansible's modules need Python in the machine; vbox's boxes have none: installed from
    the box's own package sources at the first playbook (said so)."""
    lines: list[str] = []
    if ctx.conn.run("command -v python3 >/dev/null", lines.append) == 0:
        return
    ctx.on_line("vbox: installing python3 in the machine: Ansible needs it")
    status = ctx.conn.run("sudo -n env DEBIAN_FRONTEND=noninteractive sh -c 'apt-get update -q && "
                          "apt-get install -y -q --no-install-recommends python3'", ctx.on_line)
    if status != 0:
        raise VboxError(f"{ctx.machine}: could not install python3 in the machine for Ansible (exit status {status})",
                        hint="a box with python3, or a playbook that starts with the raw module")
