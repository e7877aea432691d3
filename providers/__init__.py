"""Back ends, one module each, imported only when a machine uses them."""

from __future__ import annotations

import importlib

from vbox_cli.errors import VboxError

# name -> "module:class"
REGISTRY = {
    "lxc": "providers.lxc:LxcProvider",
    "kvm": "providers.kvm:KvmProvider",
    "xen": "providers.xen:XenProvider",
}
# Providers whose machines may live on another host take that host's access
# (providers/remote.py): one instance per provider and host.
REMOTE_CAPABLE = ("kvm", "xen")
# Providers that a host may well not have (most hosts run no Xen): listed only if they answer.
OPTIONAL_HERE = ("xen",)
_instances: dict = {}


def get(name: str, access=None):
    if name not in REGISTRY:
        available = ", ".join(sorted(REGISTRY))
        raise VboxError(f"provider {name!r} is not available in this version of vbox",
                        hint=f"available providers: {available}")
    key = (name, access.uri if access is not None else None)
    if key not in _instances:
        module_name, class_name = REGISTRY[name].split(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        _instances[key] = cls(access) if access is not None else cls()
    return _instances[key]


def for_machine(project, machines: dict, name: str):
    """The provider of machine `name`, on the host it lives on (see remote.machine_access)."""
    from providers.remote import machine_access

    machine = machines[name]
    provider = machine["provider"] if isinstance(machine, dict) else machine.provider
    return get(provider, machine_access(project, machines, name))


def all_available() -> list:
    """The providers of this host that answer (a host without Xen has no local Xen)."""
    found = []
    for name in REGISTRY:
        try:
            provider = get(name)
            if name in OPTIONAL_HERE:
                provider.conn  # noqa: B018 - connecting is the question
            found.append(provider)
        except VboxError:
            continue
    return found
