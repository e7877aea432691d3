"""`env ssh`, `env ssh-config` and `env console`: reach a machine with OpenSSH (its host
key checked), or its console."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from vbox_cli.commands import complete
from vbox_cli.commands.session import check_names
from vbox_cli.errors import VboxError


def ssh(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The machine.", autocompletion=complete.machines)],
    command: Annotated[Optional[list[str]], typer.Argument(help="A command to run instead of a shell (after --).")]
    = None,
) -> None:
    """Open a shell in a machine as its default user, or run a command there
    (`env ssh web -- cat /etc/os-release`); the command's exit status is env's.

    The first `env ssh` to a machine opens a connection to it that the next ones share
    (an OpenSSH ControlMaster, closed after 10 minutes unused, or when the machine halts):
    they start in a few milliseconds."""
    from providers.base import RUNNING
    from provisioners.openssh import endpoint
    from vbox_cli.commands.session import read_project
    from vbox_cli.machines.placement import Placements

    project, machines = read_project(ctx)
    check_names(machines, [name])
    placement = Placements(project, machines)[name]
    if placement.provider.state(project.object_name(name)) != RUNNING:
        raise VboxError(f"{name} is not running", hint=f"`env up {name}`")
    target = endpoint(project, name, project.machine_state(name), placement.access)
    argv = target.argv(command, tty=not command and os.isatty(0), socket=_shared(project, name, target))
    try:
        os.execvp("ssh", argv)
    except FileNotFoundError:
        raise VboxError("the OpenSSH client (ssh) is not installed", hint="apt-get install openssh-client") from None


def _shared(project, name: str, target) -> str | None:
    """The socket of the machine's master connection, started now if none runs; None
    when there is none (ssh then connects on its own)."""
    from provisioners.openssh import address
    from vbox_cli import sshmux

    socket = sshmux.control_path(project.id, name, make=True)
    if socket is None:
        return None
    options, destination = target.option_args(), address(target.address)
    if not sshmux.alive(socket) and not sshmux.start_master(options, destination, socket):
        return None
    sshmux.save(str(project.folder), name, options, destination)
    return socket


def ssh_config(
    ctx: typer.Context,
    names: Annotated[Optional[list[str]], typer.Argument(help="Machines (default: all that have an address).",
                                                         autocompletion=complete.machines)]
    = None,
    known_hosts: Annotated[bool, typer.Option("--known-hosts", help="Print known_hosts lines instead.")] = False,
) -> None:
    """Print an OpenSSH config for the machines (`env ssh-config >> ~/.ssh/config`, then
    `ssh vbox-PROJECT-web`), host key checking included."""
    from providers.remote import machine_access
    from provisioners.openssh import address, endpoint
    from vbox_cli.commands.session import read_project

    project, machines = read_project(ctx)
    state = project.load_state()["machines"]
    wanted = names or list(machines)
    check_names(machines, wanted)
    blocks = []
    for name in wanted:
        record = state.get(name, {})
        if not (record.get("address") and record.get("host_key")):
            continue
        if known_hosts:
            port = record.get("port", 22)
            where = address(record["address"]) if port == 22 else f"[{address(record['address'])}]:{port}"
            blocks.append(f"{project.object_name(name)},{project.host_name(name)},{where} "
                          f"{_one_line(record['host_key'])}")
            continue
        blocks.append(endpoint(project, name, record, machine_access(project, machines, name)).config_block())
    if not blocks:
        raise VboxError("no machine has been created yet", hint="`env up`")
    print("\n".join(blocks))


def inventory(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON (Ansible's YAML inventory plugin reads it too).")]
    = False,
) -> None:
    """Print an Ansible inventory of the machines made so far, for your own Ansible runs
    (`env inventory > hosts; ansible -i hosts all -m ping`): each machine's address, port,
    user and the project's key, host key checking on with the host key vbox made, and the
    groups its ansible steps name. INI unless --json."""
    import json

    from provisioners.ansible import as_ini, inventory as build
    from vbox_cli.commands.session import read_project

    project, machines = read_project(ctx)
    data = build(project, machines, project.load_state()["machines"])
    if not data["all"]["hosts"]:
        raise VboxError("no machine has been created yet", hint="`env up`")
    print(json.dumps(data, indent=2) if as_json else as_ini(data), end="\n" if as_json else "")


def _one_line(key: str) -> str:
    from provisioners.openssh import checked

    return checked(key, "host key")


def console(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The machine.", autocompletion=complete.machines)],
    tail: Annotated[Optional[int], typer.Option("--tail", help="Print the last N lines of its console log.",
                                                metavar="N")] = None,
) -> None:
    """Attach to a machine's console (Ctrl-] leaves a KVM console, Ctrl-a q an LXC one),
    or print the tail of its console log with --tail."""
    from providers.base import Capability, require
    from vbox_cli.commands.session import read_project
    from vbox_cli.files import read_regular
    from vbox_cli.machines.placement import Placements

    project, machines = read_project(ctx)
    check_names(machines, [name])
    provider = Placements(project, machines).provider(name)
    obj = project.object_name(name)
    if tail is not None:
        log = provider.console_log(obj)
        try:
            text = read_regular(log, 64 * 1024**2).decode(errors="replace") if log else None
        except OSError:
            text = None
        if text is None:
            raise VboxError(f"{name} has no console log yet", hint=f"`env up {name}`")
        lines = text.replace("\r", "").splitlines()
        print("\n".join(lines[-tail:]) if tail > 0 else "")
        return
    argv = require(provider, Capability.CONSOLE, name).console_command(obj)
    os.execvp(argv[0], argv)
