"""The value types of the Envfile: sizes, names, paths, URIs, and the base of every
provisioning step kind. Shared by the model (model.py) and the step kinds
(provisioners/kinds/), which declare their own tables."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_BOX_NAME = re.compile(r"^([a-z0-9][a-z0-9._-]{0,62}/)?[a-z0-9][a-z0-9._-]{0,62}$")  # "debian-12", "team/debian-12"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}

MIB = 1024**2
GIB = 1024**3
MAX_SIZE = 1024**5


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


# -- value types ------------------------------------------------------------------


def parse_size(value: Any) -> int:
    """'512M', '1G', '1.5GiB', '2048K' -> bytes (binary units; no unit means bytes)."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f'a size is a string with a unit, like "512M" or "1G"; got {value!r}')
    match = _SIZE.fullmatch(value)
    if not match:
        raise ValueError(f'not a size: {value!r}; write a number and a unit, like "512M" or "1G"')
    number, unit, _ = match.groups()
    from decimal import Decimal

    size = int(Decimal(number) * _UNITS[unit.upper()])
    if size > MAX_SIZE:
        raise ValueError(f"{value!r} is larger than anything a machine can have (at most 1P)")
    return size


def format_size(size: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if size >= _UNITS[unit] and size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return f"{size}"


def _at_least(minimum: int):
    def check(size: int) -> int:
        if size < minimum:
            raise ValueError(f"must be at least {format_size(minimum)}")
        return size

    return check


_SIZE_SCHEMA = {"type": "string", "pattern": _SIZE.pattern, "examples": ["512M", "1G"]}
Memory = Annotated[
    int, BeforeValidator(parse_size), AfterValidator(_at_least(64 * MIB)), WithJsonSchema(_SIZE_SCHEMA)
]
Disk = Annotated[
    int, BeforeValidator(parse_size), AfterValidator(_at_least(1 * GIB)), WithJsonSchema(_SIZE_SCHEMA)
]


def _dns_label(kind: str):
    def check(value: str) -> str:
        if not _DNS_LABEL.fullmatch(value):
            raise ValueError(
                f"{kind} {value!r} is not a DNS label: use 1-63 of a-z, 0-9 and '-', "
                "starting and ending with a letter or digit"
            )
        return value

    return check


def _hostname(value: str) -> str:
    if len(value) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in value.split(".")):
        raise ValueError(f"{value!r} is not a host name: dot-separated DNS labels of a-z, 0-9 and '-'")
    return value


def _box_name(value: str) -> str:
    if not _BOX_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a box name: use a-z, 0-9, '.', '_' and '-', with one '/' after an "
                         "organisation's name (team/debian-12)")
    return value


def _relative_path(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    if "\0" in value:
        raise ValueError("must not contain a NUL character")
    return value


def _absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"must be an absolute path in the machine, like /etc/app.conf; got {value!r}")
    if "\0" in value:
        raise ValueError("must not contain a NUL character")
    return value


def _file_mode(value: str) -> str:
    if not re.fullmatch(r"0?[0-7]{3,4}", value):
        raise ValueError(f'not a file mode: {value!r}; write it in octal, like "0644"')
    return value


def _env_names(value: dict[str, str]) -> dict[str, str]:
    for name in value:
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid environment variable name")
    return value


def _as_tuple(value: Any) -> Any:
    # TOML arrays arrive as lists; strict mode wants the tuple the frozen model holds.
    return tuple(value) if isinstance(value, list) else value


def _non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


MachineName = Annotated[str, AfterValidator(_dns_label("machine name"))]
ProjectPath = Annotated[str, AfterValidator(_relative_path)]  # a file of the project, relative to the Envfile
GuestPath = Annotated[str, AfterValidator(_absolute_path)]  # an absolute path in the machine


def _mount_point(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters (a line break, a tab)")
    return value


MountPoint = Annotated[GuestPath, AfterValidator(_mount_point)]  # where a synced folder is mounted
FileMode = Annotated[str, AfterValidator(_file_mode)]
EnvVars = Annotated[dict[str, str], AfterValidator(_env_names)]


def _ansible_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", value):
        raise ValueError(f"{value!r} is not a name Ansible takes: letters, digits and '_', not first a digit")
    return value


AnsibleName = Annotated[str, AfterValidator(_ansible_name)]  # a group or variable name in an inventory
Args = Annotated[tuple[str, ...], BeforeValidator(_as_tuple)]
Text = Annotated[str, AfterValidator(_non_blank)]
BoxName = Annotated[str, AfterValidator(_box_name)]


def _box_url(value: str) -> str:
    import urllib.parse

    scheme = urllib.parse.urlsplit(value).scheme
    if not value.strip() or any(ord(c) < 32 for c in value):
        raise ValueError("must be a URL or a path, without control characters")
    if scheme and len(scheme) > 1 and scheme not in ("http", "https", "file"):
        raise ValueError(f"vbox fetches boxes over http, https or from files of the project, not {scheme}:")
    return value


def _box_version(value: str) -> str:
    from boxes.versions import Constraint

    Constraint(value)  # raises ValueError with what is wrong
    return value


BoxURL = Annotated[str, AfterValidator(_box_url)]  # a catalog or a box archive: a URL, or a path in the project
BoxVersion = Annotated[str, AfterValidator(_box_version)]  # ">= 12.1, < 13", "~> 12.0"
Hostname = Annotated[str, AfterValidator(_hostname)]
Accel = Literal["auto", "kvm", "tcg"]
XenMode = Literal["pv", "pvh", "hvm"]

def _host_uri_pattern() -> re.Pattern:
    from providers.registry import uri_schemes

    drivers = "|".join(map(re.escape, uri_schemes()))
    return re.compile(rf"({drivers})(\+(ssh|libssh2|libssh|tcp|tls|unix))?://[^\s/]*/(system|session)?(\?\S*)?")


_HOST_URI = _host_uri_pattern()


# The URI parameters a `host` may carry, with the values each may take (None: a path of the
# project, checked against the project folder at load). Every other parameter is refused:
# libvirt's `command` names a local program to run, `socket`, `netcat` and `pkipath` name
# programs or files, `no_verify` and `known_hosts_verify` weaken or write host key checks.
HOST_URI_PARAMETERS: dict[str, re.Pattern | None] = {
    "keyfile": None,
    "known_hosts": None,
    "sshauth": re.compile(r"(agent|privkey|password|keyboard-interactive)(,(agent|privkey|password|keyboard-interactive))*"),
    "mode": re.compile(r"auto|legacy|direct"),
    "proxy": re.compile(r"auto|netcat|native"),
    "no_tty": re.compile(r"[01]"),
}


def host_uri_parameters(value: str) -> list[tuple[str, str]]:
    """The query of a `host` URI as (name, value) pairs; ValueError for anything not allowed."""
    from urllib.parse import parse_qsl, urlsplit

    query = urlsplit(value).query
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError(f"the query of {value!r} is not name=value pairs") from None
    seen = set()
    for name, item in pairs:
        if name not in HOST_URI_PARAMETERS:
            raise ValueError(f"URI parameter {name!r} is not allowed in an Envfile (allowed: "
                             f"{', '.join(HOST_URI_PARAMETERS)})")
        if name in seen:
            raise ValueError(f"URI parameter {name!r} is given twice")
        seen.add(name)
        pattern = HOST_URI_PARAMETERS[name]
        if any(ord(c) < 32 for c in item):
            raise ValueError(f"URI parameter {name!r} has a control character")
        if pattern is not None and not pattern.fullmatch(item):
            raise ValueError(f"URI parameter {name}={item!r} is not one of the values vbox allows")
        if pattern is None and (not item or item.startswith("/") or item.startswith("~")):
            raise ValueError(f"URI parameter {name} must name a file of the project, relative to the Envfile "
                             f"(for your own keys, use qemu+ssh:// with your ~/.ssh/config); got {item!r}")
    return pairs


def _host_uri(value: str) -> str:
    if not _HOST_URI.fullmatch(value):
        raise ValueError(f"{value!r} is not a libvirt URI of a Xen or QEMU host: like "
                         "'xen+ssh://root@xenhost/system', 'xen:///system' or 'qemu+ssh://user@server/system'")
    host_uri_parameters(value)
    return value


HostURI = Annotated[str, AfterValidator(_host_uri)]
Cpus = Annotated[int, Field(ge=1, le=256)]
BootTimeout = Annotated[int, Field(ge=1, le=3600)]


Port = Annotated[int, Field(ge=1, le=65535)]


def _ipv4(value: str) -> str:
    import ipaddress

    try:
        address = ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address of this host, like \"127.0.0.1\" or \"0.0.0.0\"") \
            from None
    return str(address)


HostAddress = Annotated[str, AfterValidator(_ipv4)]


class PortForward(Frozen):
    """A port of this host forwarded to a port of the machine, while the machine runs."""

    host: Port = Field(description="the port on this host")
    guest: Port = Field(description="the port in the machine")
    protocol: Literal["tcp", "udp"] = Field("tcp", description="tcp or udp")
    address: HostAddress = Field("127.0.0.1", description='the host address it listens on; "0.0.0.0": all of them')
    auto: bool = Field(False, description="when the host port is taken, use the next free one (and say which)")


class SyncedFolder(Frozen):
    """A folder of the project seen live in the machine."""

    host: ProjectPath = Field(description="a folder of the project, relative to the Envfile (\".\": the project)")
    guest: MountPoint = Field(description="where the machine sees it: an absolute path")
    readonly: bool = Field(False, description="the machine may read it but not write it")


DEFAULT_FOLDERS = (SyncedFolder(host=".", guest="/vbox"),)


def _bridge_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}", value):
        raise ValueError(f"not a network interface name: {value!r}; 1 to 15 letters, digits, '_', '.' or '-'")
    return value


def _interface_address(value: str) -> str:
    import ipaddress

    try:
        interface = ipaddress.IPv4Interface(value)
    except ValueError:
        raise ValueError(f'{value!r} is not an IPv4 address with its prefix length, like "192.168.42.10/24"') \
            from None
    if "/" not in value or interface.network.prefixlen > 30 or interface.ip in (interface.network.network_address,
                                                                                interface.network.broadcast_address):
        raise ValueError(f'{value!r} is not a host address with its prefix length, like "192.168.42.10/24"')
    return str(interface)


BridgeName = Annotated[str, AfterValidator(_bridge_name)]
InterfaceAddress = Annotated[str, AfterValidator(_interface_address)]


class ExtraNetwork(Frozen):
    """Another network the machine joins besides the project network: a bridge of this host
    (its LAN's DHCP gives the address) or an Open vSwitch bridge, with a VLAN tag."""

    bridge: BridgeName | None = Field(None, description="an existing Linux bridge of this host")
    ovs: BridgeName | None = Field(None, description='an Open vSwitch bridge; vbox makes one named "vbox-..." '
                                                     "if it is missing, and removes it when no machine uses it")
    vlan: int | None = Field(None, ge=1, le=4094, description="ovs: the VLAN tag of the machine's port")
    address: InterfaceAddress | None = Field(None, description='a static address, like "192.168.42.10/24"; '
                                                               "default: DHCP")

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.bridge is None) == (self.ovs is None):
            raise ValueError('name one of bridge = "NAME" or ovs = "NAME"')
        if self.vlan is not None and self.ovs is None:
            raise ValueError("vlan goes with an Open vSwitch bridge (ovs = ...); a Linux bridge's port has no tag")
        return self


TriggerVerb = Literal["up", "halt", "reload", "provision", "destroy"]


class Trigger(Frozen):
    """A command around a verb, for this machine: on the host (`run`, in the project
    folder, as the user who ran env; asked once before it first runs) or in a machine
    (`run_in` and `shell`, as root there)."""

    before: TriggerVerb | None = Field(None, description="runs before the verb acts on the machine; failing stops it")
    after: TriggerVerb | None = Field(None, description="runs once the verb is done with the machine")
    run: Text | None = Field(None, description="a command for /bin/sh on this host, in the project folder")
    run_in: str | None = Field(None, description="a machine of the Envfile to run `shell` in")
    shell: Text | None = Field(None, description="commands for /bin/sh -e in the machine `run_in`, as root")

    @model_validator(mode="after")
    def _one_of_each(self):
        if (self.before is None) == (self.after is None):
            raise ValueError('name one of before = "VERB" or after = "VERB"')
        if self.run is not None and (self.run_in is not None or self.shell is not None):
            raise ValueError("a trigger runs on this host (run) or in a machine (run_in and shell), not both")
        if self.run is None and (self.run_in is None or self.shell is None):
            raise ValueError('give run = "COMMAND" (on this host) or run_in = "MACHINE" with shell = "COMMANDS"')
        return self

    @property
    def when(self) -> str:
        return "before" if self.before else "after"

    @property
    def verb(self) -> str:
        return self.before or self.after

    @property
    def on_host(self) -> bool:
        return self.run is not None


class StepBase(Frozen):
    """What every provisioning step has, whatever its kind."""

    run: Literal["once", "always"] = Field("once", description="once: only at the first up; always: every up")
    privileged: bool = Field(True, description="run as root (true) or as the default user (false)")
