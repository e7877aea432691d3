"""The providers vbox has: one entry each, imported only when a machine uses it.

Every list of provider names in vbox comes from here (the Envfile's `provider` values,
`env status`, the leak lister): adding a provider is one module and one entry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from vbox_cli.errors import VboxError


@dataclass(frozen=True)
class ProviderInfo:
    name: str  # the Envfile's `provider` value
    target: str  # "module:Class"
    label: str  # how messages name its machines
    remote: bool = False  # its machines may live on another libvirt host (`host`)
    default_uri: str | None = None  # the libvirt of machines without `host`; None: the provider chooses
    optional_here: bool = False  # a host may well lack it (most run no Xen): skipped when it does not answer
    accel_labels: tuple[tuple[str, str], ...] = ()  # accelerator -> how `up` names it
    uri_schemes: tuple[str, ...] = ()  # libvirt drivers a `host` URI of its machines may name
    lacks: tuple[tuple[str, str], ...] = ()  # capability -> why none of its machines have it
    # its machines that `env migrate` moved to another host (not `host`): the libvirt drivers
    # a `--to` URI may name, the URI that names this host, and who runs them there
    moved_schemes: tuple[str, ...] = ()
    home_uri: str | None = None
    moved_target: str | None = None  # "module:Class"


REGISTRY: dict[str, ProviderInfo] = {
    "lxc": ProviderInfo("lxc", "providers.lxc:LxcProvider", "LXC container", moved_schemes=("lxc",),
                        home_uri="lxc:///system", moved_target="providers.lxc_guest:LxcGuestProvider"),
    "kvm": ProviderInfo("kvm", "providers.kvm:KvmProvider", "KVM machine", remote=True,
                        accel_labels=(("kvm", "KVM"), ("tcg", "TCG (software emulation)")), uri_schemes=("qemu",)),
    "xen": ProviderInfo("xen", "providers.xen:XenProvider", "Xen guest", remote=True,
                        default_uri="xen:///system", optional_here=True, accel_labels=(("xen", "Xen"),),
                        uri_schemes=("xen",),
                        lacks=(("ports", "a Xen guest's network is on its Xen host, not on this one"),
                               ("networks", "a Xen guest's network is on its Xen host, not on this one"),
                               ("folders", "a Xen guest runs on its Xen host, which does not see this project "
                                           "folder"),
                               ("snapshots", "libvirt's Xen driver (libxl) keeps no snapshots"))),
}
DEFAULT = "lxc"  # the provider of a machine that names none
_instances: dict = {}


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def lacks(name: str, capability: str) -> str | None:
    """Why no machine of provider `name` has `capability` (a Capability's name, lower case)."""
    return dict(info(name).lacks).get(capability)


def uri_schemes() -> tuple[str, ...]:
    return tuple(scheme for entry in REGISTRY.values() for scheme in entry.uri_schemes)


def info(name: str) -> ProviderInfo:
    try:
        return REGISTRY[name]
    except KeyError:
        raise VboxError(f"provider {name!r} is not available in this version of vbox",
                        hint=f"available providers: {', '.join(sorted(REGISTRY))}") from None


def get(name: str, access=None):
    """The provider `name` for machines on the host `access` (providers/remote.py; None:
    this host): one instance per provider and host."""
    entry = info(name)
    key = (name, access.uri if access is not None else None)
    if key not in _instances:
        target = entry.moved_target if access is not None and entry.moved_target else entry.target
        module_name, class_name = target.split(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        _instances[key] = cls(access) if access is not None else cls()
    return _instances[key]


def local_providers() -> list[tuple[str, object | None, str]]:
    """(name, provider or None, why not) for each provider on this host. A provider that
    does not answer (libvirtd down, no Xen here) comes with the reason, so that a caller
    can list what it could not ask instead of failing."""
    found = []
    for name, entry in REGISTRY.items():
        try:
            provider = get(name)
            provider.objects("vbox-")  # asking is the question
            found.append((name, provider, ""))
        except VboxError as exc:
            if not entry.optional_here:
                found.append((name, None, exc.message))
    return found
