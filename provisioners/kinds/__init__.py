"""The kinds of provisioning step, one module each. A kind declares its Envfile table
(`Model`, whose key names the kind), the project files it reads (`files`), its one-line
summary and how it runs over an SSH connection. Adding a kind is one module and one
line here; the Envfile model, `env validate` and the runner pick it up.

The modules import only the Envfile's value types: the Envfile model imports them all.
"""

from __future__ import annotations

import importlib
from types import ModuleType

KINDS = ("shell", "script", "file", "ansible")


def module(kind: str) -> ModuleType:
    return importlib.import_module(f"provisioners.kinds.{kind}")


def models() -> dict[str, type]:
    """kind -> its Envfile model."""
    return {kind: module(kind).Model for kind in KINDS}


def kind_of(step) -> str:
    for kind in KINDS:
        if isinstance(step, module(kind).Model):
            return kind
    raise TypeError(f"not a provisioning step: {step!r}")


def files(step) -> list[str]:
    """The project files (relative to the Envfile) that the step reads."""
    return module(kind_of(step)).files(step)


def summary(step) -> str:
    return module(kind_of(step)).summary(step)
