"""Dynamic shell completion: machine names from the Envfile, box and recipe names from
the store. A completion never fails: it offers nothing instead."""

from __future__ import annotations


def machines(incomplete: str) -> list[str]:
    try:
        from vbox_cli.envfile.cache import read, summarize
        from vbox_cli.paths import find_envfile

        path = find_envfile()
        names = list(summarize(path, read(path))["machines"]) if path else []
    except Exception:  # an invalid Envfile, no Envfile: nothing to offer
        return []
    return [name for name in names if name.startswith(incomplete)]


def boxes(incomplete: str) -> list[str]:
    try:
        from boxes.store import BoxStore

        names = sorted({box.name for box in BoxStore().boxes()})
    except Exception:
        return []
    return [name for name in names if name.startswith(incomplete)]


def recipes(incomplete: str) -> list[str]:
    try:
        from boxes.recipe import available

        names = available()
    except Exception:
        return []
    return [name for name in names if name.startswith(incomplete)]
