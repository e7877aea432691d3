"""`env ssh` and `env ssh-config`: reach a machine with OpenSSH, its host key checked."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from vbox_cli.errors import UsageError, VboxError


def _check_names(machines: dict, names: list[str]) -> None:
    unknown = [n for n in names if n not in machines]
    if unknown:
        raise UsageError(f"no machine named {', '.join(map(repr, unknown))} in the Envfile",
                         hint="machines: " + ", ".join(machines))


def ssh_options(project, record: dict, access=None) -> list[str]:
    options = ["-i", str(project.client_key), "-o", "IdentitiesOnly=yes",
               "-o", f"UserKnownHostsFile={project.known_hosts}", "-o", "StrictHostKeyChecking=yes",
               "-o", "LogLevel=ERROR", "-l", record.get("user", "vbox"), "-p", str(record.get("port", 22))]
    proxy = proxy_option(project, access)
    return options + (["-o", f"ProxyCommand={proxy}"] if proxy else [])


def proxy_option(project, access) -> str | None:
    """How OpenSSH reaches a guest of a remote host: through that host."""
    import shlex

    if access is None or not access.remote:
        return None
    if access.machine:  # a machine of the Envfile: the project's key, its own host key
        return shlex.join(["ssh", "-i", str(project.client_key), "-o", "IdentitiesOnly=yes",
                           "-o", f"UserKnownHostsFile={project.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                           "-o", "LogLevel=ERROR", "-l", access.ssh_user, "-p", str(access.ssh_port),
                           "-W", "%h:%p", access.ssh_host])
    options = ["-l", access.ssh_user] if access.ssh_user else []
    if access.key_file:  # the host's URI names the key and known_hosts libvirt uses: these too
        options += ["-i", access.key_file, "-o", "IdentitiesOnly=yes"]
    if access.known_hosts:
        options += ["-o", f"UserKnownHostsFile={access.known_hosts}", "-o", "StrictHostKeyChecking=yes"]
    return shlex.join(["ssh", *options, "-p", str(access.ssh_port), "-W", "%h:%p", access.ssh_host])


def ssh(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The machine.")],
    command: Annotated[Optional[list[str]], typer.Argument(help="A command to run instead of a shell (after --).")]
    = None,
) -> None:
    """Open a shell in a machine as its default user, or run a command there
    (`env ssh web -- cat /etc/os-release`); the command's exit status is env's."""
    from providers.base import RUNNING

    import providers
    from providers.remote import machine_access
    from vbox_cli.commands.session import read_project

    project, machines = read_project(ctx)
    _check_names(machines, [name])
    record = project.machine_state(name)
    if providers.for_machine(project, machines, name).state(project.object_name(name)) != RUNNING:
        raise VboxError(f"{name} is not running", hint=f"`env up {name}`")
    if not record.get("address"):
        raise VboxError(f"{name}: vbox has no record of its address", hint=f"`env destroy {name}`, `env up {name}`")
    argv = ["ssh", *ssh_options(project, record, machine_access(project, machines, name))]
    if not command and os.isatty(0):
        argv.append("-t")
    argv.append(record["address"])
    if command:
        # One argument is a shell command line (`-- 'ls | wc -l'`); several are argv,
        # quoted so that each reaches the machine as it was given.
        import shlex

        argv += ["--", command[0] if len(command) == 1 else shlex.join(command)]
    try:
        os.execvp("ssh", argv)
    except FileNotFoundError:
        raise VboxError("the OpenSSH client (ssh) is not installed", hint="apt-get install openssh-client") from None


def ssh_config(
    ctx: typer.Context,
    names: Annotated[Optional[list[str]], typer.Argument(help="Machines (default: all that have an address).")]
    = None,
    known_hosts: Annotated[bool, typer.Option("--known-hosts", help="Print known_hosts lines instead.")] = False,
) -> None:
    """Print an OpenSSH config for the machines (`env ssh-config >> ~/.ssh/config`, then
    `ssh vbox-PROJECT-web`), host key checking included."""
    from vbox_cli.commands.session import read_project

    from providers.remote import machine_access

    project, machines = read_project(ctx)
    state = project.load_state()["machines"]
    wanted = names or list(machines)
    _check_names(machines, wanted)
    blocks = []
    for name in wanted:
        record = state.get(name, {})
        if not (record.get("address") and record.get("host_key")):
            continue
        alias = project.object_name(name)
        port = record.get("port", 22)
        if known_hosts:
            where = record["address"] if port == 22 else f"[{record['address']}]:{port}"
            blocks.append(f"{alias},{where} {record['host_key']}")
            continue
        blocks.append("\n".join([
            f"Host {alias}",
            f"  HostName {record['address']}",
            f"  Port {port}",
            f"  User {record.get('user', 'vbox')}",
            f"  IdentityFile {project.client_key}",
            "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {project.known_hosts}",
            "  StrictHostKeyChecking yes",
            f"  HostKeyAlias {alias}",
            *([f"  ProxyCommand {proxy}"] if (proxy := proxy_option(project, machine_access(project, machines, name)))
              else []),
        ]) + "\n")
    if not blocks:
        raise VboxError("no machine has been created yet", hint="`env up`")
    print("\n".join(blocks))


def console(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The machine.")],
    tail: Annotated[Optional[int], typer.Option("--tail", help="Print the last N lines of its console log.",
                                                metavar="N")] = None,
) -> None:
    """Attach to a machine's console (Ctrl-] leaves a KVM console, Ctrl-a q an LXC one),
    or print the tail of its console log with --tail."""
    from providers.base import SupportsConsole
    import providers
    from vbox_cli.commands.session import read_project

    project, machines = read_project(ctx)
    _check_names(machines, [name])
    provider = providers.for_machine(project, machines, name)
    obj = project.object_name(name)
    if tail is not None:
        log = provider.console_log(obj)
        if not log or not log.exists():
            raise VboxError(f"{name} has no console log yet", hint=f"`env up {name}`")
        text = log.read_text(errors="replace").replace("\r", "")
        print("\n".join(text.splitlines()[-tail:]) if tail > 0 else "")
        return
    if not isinstance(provider, SupportsConsole):
        raise VboxError(f"the {provider.name} provider has no console to attach to", hint="try --tail")
    argv = provider.console_command(obj)
    os.execvp(argv[0], argv)
