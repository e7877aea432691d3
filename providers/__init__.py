"""Back ends, one module each, imported only when a machine uses them."""

from __future__ import annotations

import importlib

from vbox_cli.errors import VboxError

# name -> "module:class"; xen comes with its issue.
REGISTRY = {
    "lxc": "providers.lxc:LxcProvider",
    "kvm": "providers.kvm:KvmProvider",
}
_instances: dict = {}


def get(name: str):
    if name not in REGISTRY:
        available = ", ".join(sorted(REGISTRY))
        raise VboxError(f"provider {name!r} is not available in this version of vbox",
                        hint=f"available providers: {available}")
    if name not in _instances:
        module_name, class_name = REGISTRY[name].split(":")
        _instances[name] = getattr(importlib.import_module(module_name), class_name)()
    return _instances[name]


def all_available() -> list:
    return [get(name) for name in REGISTRY]
