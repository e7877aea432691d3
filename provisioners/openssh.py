"""OpenSSH options for reaching a machine: one builder for `env ssh` (a command line),
`env ssh-config` (a config block) and, later, ansible's inventory.

Every value is checked and quoted: a control character or a double quote is refused
(it could end a config line or a quoted value); `%` is doubled (OpenSSH expands `%`
tokens in file names and commands); a value with spaces is double-quoted (a project
folder with a space in its path must not break the user's ~/.ssh/config).
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass

from vbox_cli.errors import VboxError

_USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}\$?", re.IGNORECASE)
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})")


def unsafe_character(c: str) -> bool:
    """A control character (C0, DEL, C1) or a Unicode line or paragraph separator: each
    could end a line for some reader of the config."""
    import unicodedata

    return unicodedata.category(c) in ("Cc", "Zl", "Zp")


def checked(value: str, what: str) -> str:
    if any(unsafe_character(c) for c in value) or '"' in value:
        raise VboxError(f"{what} {value!r} has a control character or a double quote; vbox will not pass it to "
                        "OpenSSH")
    return value


def escaped(value: str, what: str) -> str:
    """A file name for OpenSSH: checked, `%` doubled."""
    return checked(value, what).replace("%", "%%")


def quoted(value: str, what: str) -> str:
    """A config value: escaped, and double-quoted when it has white space or quotes."""
    value = escaped(value, what)
    return f'"{value}"' if re.search(r"[\s'#]", value) or not value else value


def address(value: str) -> str:
    """A machine's address from vbox's state: an IP address, nothing else (a leading `-`
    would be read by ssh as an option)."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise VboxError(f"the recorded address {value!r} is not an IP address",
                        hint="the project's .vbox/state.json was changed by hand: `env destroy`, then `env up`") \
            from None


def host_name(value: str, what: str = "host name") -> str:
    if not _HOST.fullmatch(value):
        raise VboxError(f"{what} {value!r} is not a host name or address")
    return value


def user_name(value: str) -> str:
    if not _USER.fullmatch(value):
        raise VboxError(f"user name {value!r} is not a valid login name")
    return value


def port(value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise VboxError(f"port {value!r} is not a TCP port")
    return value


@dataclass(frozen=True)
class Endpoint:
    """How OpenSSH reaches one machine."""

    alias: str  # vbox-PROJECT-web
    name: str  # web.PROJECT.vbox: the machine's name from this host
    address: str
    port: int
    user: str
    key: str  # the project's private key
    known_hosts: str  # the project's known_hosts (every host key vbox made)
    proxy: str | None = None  # a ProxyCommand (guests of a remote host)

    def options(self) -> list[tuple[str, str]]:
        """(keyword, value) pairs, values already quoted for OpenSSH."""
        pairs = [
            ("HostName", address(self.address)),
            ("Port", str(port(self.port))),
            ("User", user_name(self.user)),
            ("IdentityFile", quoted(self.key, "key file")),
            ("IdentitiesOnly", "yes"),
            ("UserKnownHostsFile", quoted(self.known_hosts, "known_hosts file")),
            ("StrictHostKeyChecking", "yes"),
            ("HostKeyAlias", host_name(self.alias, "alias")),
        ]
        if self.proxy:
            pairs.append(("ProxyCommand", checked(self.proxy, "proxy command")))
        return pairs

    def option_args(self) -> list[str]:
        """The options as ssh arguments (the address goes after `--`)."""
        args = ["-o", "LogLevel=ERROR"]
        for keyword, value in self.options():
            if keyword != "HostName":
                args += ["-o", f"{keyword}={value}"]
        return args

    def argv(self, command: list[str] | None = None, tty: bool = False, socket: str | None = None) -> list[str]:
        """The ssh command line, through the machine's master at `socket` when one runs
        there (vbox_cli.sshmux)."""
        from vbox_cli.sshmux import client_argv

        return client_argv(self.option_args(), address(self.address), socket, command, tty)

    def config_block(self) -> str:
        return "\n".join([f"Host {host_name(self.alias, 'alias')} {host_name(self.name, 'name')}",
                          *(f"  {keyword} {value}" for keyword, value in self.options())]) + "\n"


def proxy_command(project, access) -> str | None:
    """How OpenSSH reaches a guest of a remote host: through that host. Its `%h:%p` are
    OpenSSH's tokens; every other `%` is doubled."""
    if access is None or not access.remote:
        return None
    if access.machine:  # a machine of the Envfile: the project's key, its own host key
        options = ["-i", escaped(str(project.client_key), "key file"), "-o", "IdentitiesOnly=yes",
                   "-o", f"UserKnownHostsFile={quoted(str(project.known_hosts), 'known_hosts file')}",
                   "-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR",
                   "-l", user_name(access.ssh_user)]
    else:
        options = ["-l", user_name(access.ssh_user)] if access.ssh_user else []
        if access.key_file:  # the host's URI names the key and known_hosts libvirt uses: these too
            options += ["-i", escaped(access.key_file, "key file"), "-o", "IdentitiesOnly=yes"]
        if access.known_hosts:
            options += ["-o", f"UserKnownHostsFile={quoted(access.known_hosts, 'known_hosts file')}",
                        "-o", "StrictHostKeyChecking=yes"]
    return shlex.join(["ssh", *options, "-p", str(port(access.ssh_port)), "-W", "%h:%p", "--",
                       host_name(access.ssh_host)])


def endpoint(project, name: str, record: dict, access) -> Endpoint:
    """The endpoint of machine `name` from its state record (made by `env up`)."""
    if not (record.get("address") and record.get("host_key")):
        raise VboxError(f"{name}: vbox has no record of its address", hint=f"`env destroy {name}`, `env up {name}`")
    return Endpoint(alias=project.object_name(name), name=project.host_name(name), address=record["address"],
                    port=record.get("port", 22),
                    user=record.get("user", "vbox"), key=str(project.client_key),
                    known_hosts=str(project.known_hosts), proxy=proxy_command(project, access))
