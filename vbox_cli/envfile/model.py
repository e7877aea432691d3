"""The Envfile model: frozen pydantic models, unknown keys forbidden.

`Envfile` is what the file says; `Machine` is one machine with `[defaults]` applied
(see `Envfile.machines_resolved`). Sizes are held in bytes. The value types are in
types.py; each step kind declares its own table (provisioners/kinds/); the providers
come from providers/registry.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Discriminator, Field, Tag

from provisioners.kinds import KINDS, models
from providers.registry import DEFAULT as DEFAULT_PROVIDER
from providers.registry import names as provider_names
from vbox_cli.envfile.types import (  # noqa: F401 - re-exported: the model's vocabulary
    GIB,
    MIB,
    Accel,
    BootTimeout,
    BoxName,
    BoxURL,
    BoxVersion,
    Cpus,
    Disk,
    Frozen,
    Hostname,
    HostURI,
    MachineName,
    Memory,
    DEFAULT_FOLDERS,
    ExtraNetwork,
    PortForward,
    StepBase,
    Trigger,
    SyncedFolder,
    XenMode,
    _as_tuple,
    format_size,
    parse_size,
)

DEFAULT_BOX = "debian-12"
Provider = Literal[provider_names()]  # type: ignore[valid-type] - the registry's names

# -- provisioning steps: one model per kind (provisioners/kinds/) ------------------

STEP_KINDS: dict[str, type[StepBase]] = models()
ShellStep, ScriptStep, FileStep = STEP_KINDS["shell"], STEP_KINDS["script"], STEP_KINDS["file"]


def step_kind(value: Any) -> str | None:
    if isinstance(value, StepBase):
        return next(k for k, cls in STEP_KINDS.items() if isinstance(value, cls))
    if not isinstance(value, dict):
        return None
    kinds = [k for k in STEP_KINDS if k in value]
    return kinds[0] if len(kinds) == 1 else None


_KIND_LIST = ", ".join(f"'{k}'" for k in KINDS[:-1]) + f" or '{KINDS[-1]}'"
Step = Annotated[
    Union[tuple(Annotated[cls, Tag(kind)] for kind, cls in STEP_KINDS.items())],  # type: ignore[valid-type]
    Discriminator(
        step_kind,
        custom_error_type="step_kind",
        custom_error_message=f"a step is a table with exactly one of {_KIND_LIST}",
    ),
]

Steps = Annotated[tuple[Step, ...], BeforeValidator(_as_tuple)]

# -- machines ---------------------------------------------------------------------


class Defaults(Frozen):
    """Settings every machine inherits unless it sets its own."""

    box: BoxName = Field(DEFAULT_BOX, description="base box, from `env box list`")
    box_url: BoxURL | None = Field(None, description="where `up` fetches the box when the store lacks it: a catalog "
                                   "(Vagrant's box metadata JSON) or a box archive (.box); a URL or a path in the "
                                   "project")
    box_version: BoxVersion | None = Field(None, description='which versions of the box will do, like ">= 12.1, < 13" '
                                           'or "~> 12.0"; default: the newest')
    provider: Provider = Field(DEFAULT_PROVIDER, description="lxc (container), kvm (virtual machine) or xen (Xen guest)")
    cpus: Cpus = Field(1, description="virtual CPUs")
    memory: Memory = Field(512 * MIB, description='memory limit, like "512M" or "1G"')
    disk: Disk = Field(10 * GIB, description='disk size (kvm, xen), like "10G"')
    autostart: bool = Field(True, description="`env up` without names starts this machine")
    boot_timeout: BootTimeout = Field(300, description="seconds to wait for SSH after start")
    accel: Accel = Field("auto", description="kvm machines: auto (KVM if it really works, else TCG), kvm or tcg")
    host: HostURI | None = Field(None, description="kvm, xen: the libvirt URI of the host that runs the machine; "
                                 "default this host")
    mode: XenMode = Field("pvh", description="xen machines: pv, pvh or hvm")
    provision: Steps = Field((), description="provisioning steps, run in order over SSH")
    folders: Annotated[tuple[SyncedFolder, ...], BeforeValidator(_as_tuple)] = Field(
        DEFAULT_FOLDERS, description="project folders the machine sees live; [] turns the default off")
    protect: bool = Field(False, description="`env destroy` refuses the machine unless --force-protected")
    unprivileged: bool = Field(False, description="lxc machines: an unprivileged container, its root a host id "
                               "of root's subordinate range (/etc/subuid), not this host's root; set when it is made")


class MachineSpec(Frozen):
    """One [machines.NAME] table; unset keys come from [defaults]."""

    box: BoxName | None = None
    box_url: BoxURL | None = None
    box_version: BoxVersion | None = None
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
    folders: Annotated[tuple[SyncedFolder, ...], BeforeValidator(_as_tuple)] | None = Field(
        None, description="replaces the folders of [defaults] when set")
    hostname: Hostname | None = Field(None, description="host name in the machine; default: the machine's name")
    ports: Annotated[tuple[PortForward, ...], BeforeValidator(_as_tuple)] = Field(
        (), description="ports of this host forwarded to the machine while it runs")
    networks: Annotated[tuple[ExtraNetwork, ...], BeforeValidator(_as_tuple)] = Field(
        (), description="networks it joins besides the project network: host bridges, Open vSwitch bridges")
    protect: bool | None = None
    unprivileged: bool | None = None
    depends_on: Annotated[tuple[MachineName, ...], BeforeValidator(_as_tuple)] = Field(
        (), description="machines of the Envfile this one provisions after (`env up NAME` brings them up too)")
    triggers: Annotated[tuple[Trigger, ...], BeforeValidator(_as_tuple)] = Field(
        (), description="commands before or after up, halt, reload, provision or destroy of this machine")


class Machine(Frozen):
    """A machine with every setting resolved."""

    name: str
    box: str
    box_url: str | None = None
    box_version: str | None = None
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
    ports: tuple[Any, ...] = ()
    networks: tuple[Any, ...] = ()
    folders: tuple[Any, ...] = ()
    folders_set: bool = False  # the Envfile names folders (not only the default)
    disk_set: bool = False  # the Envfile names its disk size (an LXC machine has one then)
    protect: bool = False
    unprivileged: bool = False
    depends_on: tuple[str, ...] = ()
    triggers: tuple[Any, ...] = ()


class Envfile(Frozen):
    defaults: Defaults = Field(default_factory=Defaults)
    machines: Annotated[dict[MachineName, MachineSpec], Field(min_length=1)]

    def machines_resolved(self) -> dict[str, Machine]:
        resolved = {}
        for name, spec in self.machines.items():
            values = {key: getattr(self.defaults, key) for key in Defaults.model_fields}
            values.update({key: value for key, value in spec if value is not None})
            values.setdefault("hostname", name)
            values["folders_set"] = spec.folders is not None or "folders" in self.defaults.model_fields_set
            values["disk_set"] = spec.disk is not None or "disk" in self.defaults.model_fields_set
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
        case ("machines", str(), "ports", int()):
            return list(PortForward.model_fields)
        case ("machines", str(), "networks", int()):
            return list(ExtraNetwork.model_fields)
        case ("machines", str(), "triggers", int()):
            return list(Trigger.model_fields)
        case (*_, "folders", int()):
            return list(SyncedFolder.model_fields)
    return None
