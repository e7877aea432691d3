"""The Envfile model: frozen pydantic models, unknown keys forbidden.

`Envfile` is what the file says; `Machine` is one machine with `[defaults]` applied
(see `Envfile.machines_resolved`). Sizes are held in bytes.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
)

PROVIDERS = ("lxc", "kvm", "xen")
DEFAULT_BOX = "debian-12"

_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_BOX_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}

MIB = 1024**2
GIB = 1024**3


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


# -- value types ------------------------------------------------------------------


def parse_size(value: Any) -> int:
    """'512M', '1G', '1.5GiB', '2048K' -> bytes (binary units; no unit means bytes)."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f'a size is a string with a unit, like "512M" or "1G"; got {value!r}')
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f'not a size: {value!r}; write a number and a unit, like "512M" or "1G"')
    number, unit, _ = match.groups()
    return int(float(number) * _UNITS[unit.upper()])


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
        if not _DNS_LABEL.match(value):
            raise ValueError(
                f"{kind} {value!r} is not a DNS label: use 1-63 of a-z, 0-9 and '-', "
                "starting and ending with a letter or digit"
            )
        return value

    return check


def _hostname(value: str) -> str:
    if len(value) > 253 or not all(_DNS_LABEL.match(label) for label in value.split(".")):
        raise ValueError(f"{value!r} is not a host name: dot-separated DNS labels of a-z, 0-9 and '-'")
    return value


def _box_name(value: str) -> str:
    if not _BOX_NAME.match(value):
        raise ValueError(f"{value!r} is not a box name: use a-z, 0-9, '.', '_' and '-'")
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
        if not _ENV_NAME.match(name):
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
BoxName = Annotated[str, AfterValidator(_box_name)]
Hostname = Annotated[str, AfterValidator(_hostname)]
Provider = Literal["lxc", "kvm", "xen"]
Accel = Literal["auto", "kvm", "tcg"]
XenMode = Literal["pv", "pvh", "hvm"]

_HOST_URI = re.compile(r"^(xen|qemu)(\+(ssh|libssh2|libssh|tcp|tls|unix))?://[^\s/]*/(system|session)?(\?\S*)?$")


def _host_uri(value: str) -> str:
    if not _HOST_URI.match(value):
        raise ValueError(f"{value!r} is not a libvirt URI of a Xen or QEMU host: like "
                         "'xen+ssh://root@xenhost/system', 'xen:///system' or 'qemu+ssh://user@server/system'")
    return value


HostURI = Annotated[str, AfterValidator(_host_uri)]
Cpus = Annotated[int, Field(ge=1, le=256)]
BootTimeout = Annotated[int, Field(ge=1, le=3600)]

# -- provisioning steps -----------------------------------------------------------


class _Step(Frozen):
    run: Literal["once", "always"] = Field("once", description="once: only at the first up; always: every up")
    privileged: bool = Field(True, description="run as root (true) or as the default user (false)")


class ShellStep(_Step):
    shell: Annotated[str, AfterValidator(_non_blank)] = Field(description="inline shell commands")


class ScriptStep(_Step):
    script: Annotated[str, AfterValidator(_relative_path)] = Field(
        description="path of a script, relative to the Envfile; uploaded and run"
    )
    args: Annotated[tuple[str, ...], BeforeValidator(_as_tuple)] = Field((), description="arguments to the script")
    env: Annotated[dict[str, str], AfterValidator(_env_names)] = Field(
        default_factory=dict, description="environment variables for the script"
    )


class FileStep(_Step):
    file: Annotated[str, AfterValidator(_relative_path)] = Field(
        description="path of a file, relative to the Envfile; uploaded"
    )
    to: Annotated[str, AfterValidator(_absolute_path)] = Field(description="absolute destination in the machine")
    mode: Annotated[str, AfterValidator(_file_mode)] | None = Field(None, description='octal mode, like "0644"')


STEP_KINDS: dict[str, type[_Step]] = {"shell": ShellStep, "script": ScriptStep, "file": FileStep}


def step_kind(value: Any) -> str | None:
    if isinstance(value, _Step):
        return next(k for k, cls in STEP_KINDS.items() if isinstance(value, cls))
    if not isinstance(value, dict):
        return None
    kinds = [k for k in STEP_KINDS if k in value]
    return kinds[0] if len(kinds) == 1 else None


Step = Annotated[
    Union[Annotated[ShellStep, Tag("shell")], Annotated[ScriptStep, Tag("script")], Annotated[FileStep, Tag("file")]],
    Discriminator(
        step_kind,
        custom_error_type="step_kind",
        custom_error_message="a step is a table with exactly one of 'shell', 'script' or 'file'",
    ),
]

Steps = Annotated[tuple[Step, ...], BeforeValidator(_as_tuple)]

# -- machines ---------------------------------------------------------------------


class Defaults(Frozen):
    """Settings every machine inherits unless it sets its own."""

    box: BoxName = Field(DEFAULT_BOX, description="base box, from `env box list`")
    provider: Provider = Field("lxc", description="lxc (container), kvm (virtual machine) or xen (Xen guest)")
    cpus: Cpus = Field(1, description="virtual CPUs")
    memory: Memory = Field(512 * MIB, description='memory limit, like "512M" or "1G"')
    disk: Disk = Field(10 * GIB, description='disk size (kvm, xen), like "10G"')
    autostart: bool = Field(True, description="`env up` without names starts this machine")
    boot_timeout: BootTimeout = Field(120, description="seconds to wait for SSH after start")
    accel: Accel = Field("auto", description="kvm machines: auto (KVM if it really works, else TCG), kvm or tcg")
    host: HostURI | None = Field(None, description="kvm, xen: the libvirt URI of the host that runs the machine; "
                                 "default this host")
    mode: XenMode = Field("pvh", description="xen machines: pv, pvh or hvm")
    provision: Steps = Field((), description="provisioning steps, run in order over SSH")


class MachineSpec(Frozen):
    """One [machines.NAME] table; unset keys come from [defaults]."""

    box: BoxName | None = None
    provider: Provider | None = None
    cpus: Cpus | None = None
    memory: Memory | None = None
    disk: Disk | None = None
    autostart: bool | None = None
    boot_timeout: BootTimeout | None = None
    accel: Accel | None = None
    host: HostURI | None = None
    mode: XenMode | None = None
    provision: Steps | None = Field(None, description="replaces the steps of [defaults] when set")
    hostname: Hostname | None = Field(None, description="host name in the machine; default: the machine's name")


class Machine(Frozen):
    """A machine with every setting resolved."""

    name: str
    box: str
    provider: Provider
    cpus: int
    memory: int
    disk: int
    autostart: bool
    boot_timeout: int
    accel: str
    host: str | None = None
    mode: str = "pvh"
    provision: tuple[Any, ...]
    hostname: str


class Envfile(Frozen):
    defaults: Defaults = Field(default_factory=Defaults)
    machines: Annotated[dict[MachineName, MachineSpec], Field(min_length=1)]

    def machines_resolved(self) -> dict[str, Machine]:
        resolved = {}
        for name, spec in self.machines.items():
            values = {key: getattr(self.defaults, key) for key in Defaults.model_fields}
            values.update({key: value for key, value in spec if value is not None})
            values.setdefault("hostname", name)
            resolved[name] = Machine(name=name, **values)
        return resolved


def json_schema() -> dict:
    schema = Envfile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "vbox Envfile"
    return schema


def fields_of(loc: tuple) -> list[str] | None:
    """The keys allowed in the table at `loc` (a pydantic location, step tags included)."""
    match loc:
        case ():
            return list(Envfile.model_fields)
        case ("defaults",):
            return list(Defaults.model_fields)
        case ("machines", str()):
            return list(MachineSpec.model_fields)
        case (*_, "provision", int(), str() as kind) if kind in STEP_KINDS:
            return list(STEP_KINDS[kind].model_fields)
    return None
