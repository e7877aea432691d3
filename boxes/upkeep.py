"""Keeping the store current: which boxes have a newer version (in their catalog, or in
vbox's own recipe), fetching those, and removing old versions nothing uses."""

from __future__ import annotations

from dataclasses import dataclass

from boxes.versions import sort_key


@dataclass(frozen=True)
class Outdated:
    name: str
    have: str  # the newest version in the store
    newest: str  # the newest version offered
    where: str  # the catalog, or "recipe"
    error: str = ""  # the catalog could not be read: why


def _newest(boxes) -> dict:
    """name -> the store's newest box of that name (by version)."""
    newest = {}
    for box in boxes:
        if box.name not in newest or sort_key(box.version) > sort_key(newest[box.name].version):
            newest[box.name] = box
    return newest


def outdated(store) -> list[Outdated]:
    """Boxes whose source offers a newer version than the store's newest; a catalog that
    cannot be read is listed with the reason."""
    from boxes import recipe as recipes
    from boxes.catalog import CatalogError, locate, offers

    found = []
    for name, box in sorted(_newest(store.boxes()).items()):
        source = box.meta.source or {}
        if source.get("catalog"):
            try:
                versions = [o.version for o in offers(locate(source["catalog"]), name)]
            except CatalogError as exc:
                found.append(Outdated(name, box.version, "?", source["catalog"], exc.message))
                continue
            newest = max(versions, key=sort_key, default=None)
            if newest and sort_key(newest) > sort_key(box.version):
                found.append(Outdated(name, box.version, newest, source["catalog"]))
        elif name in recipes.available() and not source:
            spec = recipes.load(name)
            if sort_key(spec.version) > sort_key(box.version):
                found.append(Outdated(name, box.version, spec.version, "recipe"))
    return found


def prunable(store) -> list:
    """Boxes that are neither the newest version of their name nor used by a machine (a
    record of an earlier vbox, which does not say the version, keeps every version)."""
    newest = _newest(store.boxes())
    found = []
    for box in store.boxes():
        if box.path == newest[box.name].path or not box.path.is_relative_to(store.root):
            continue
        versions = [record.get("version") for record in store.user_records(box.name).values()]
        if None in versions or box.version in versions:
            continue
        found.append(box)
    return found
