"""The boxes of the machines `up` brings up: from the store, or fetched from the
machine's `box_url` (a catalog or a box archive) when the store has no version that
its `box_version` allows. Before anything is made."""

from __future__ import annotations

import time

from vbox_cli.errors import VboxError
from vbox_cli.events import Phase, byte_progress


def boxes_for(session, names: list[str], pinned: dict[str, str] | None = None, update: bool = False) -> dict:
    """machine name -> Box; a box several machines share is looked up (or fetched) once.
    `pinned`: machine -> the exact version to use (Envfile.lock's, with --locked);
    `update`: a machine with a box_url takes the newest version its catalog allows."""
    from boxes.versions import Constraint

    found: dict[tuple, object] = {}
    result = {}
    for name in names:
        machine = session.machines[name]
        wanted = f"= {pinned[name]}" if pinned and name in pinned else machine.box_version or ""
        key = (machine.box, wanted, machine.box_url or "", machine.provider)
        if key not in found:
            found[key] = _box(session, name, machine, Constraint(wanted), update)
        result[name] = usable(found[key], name, session.provider(name))
    return result


def usable(box, name: str, provider):
    """The box, if a machine of `provider` can boot from it; else a clear refusal."""
    missing = [kind for kind in getattr(provider, "needs", ()) if not box.artefact(kind).exists()]
    if not missing:
        return box
    if box.artefact("disk").exists() and "kernel" in missing:
        why = "it boots from its disk's own bootloader, and a Xen PV guest needs a kernel beside the disk"
    elif "rootfs" in missing:
        why = "it has a disk only, no root tree for a container (a VM's box)"
    else:
        why = "it has a root tree only, no disk for a VM (a container's box)"
    other = "kvm" if box.artefact("disk").exists() else "lxc" if box.artefact("rootfs").exists() else None
    raise VboxError(f"{name}: box {box.name} {box.version} cannot make this {provider.label}: {why}",
                    hint=f'use provider = "{other}" for it' if other and other != provider.name else None)


def _box(session, name: str, machine, constraint, update: bool = False):
    from boxes.versions import sort_key

    if update and machine.box_url:
        return _fetch(session, name, machine, constraint)  # the store's copy when it has that version

    store = session.store
    local = [b for b in store.boxes() if b.name == machine.box and constraint.allows(b.version)]
    needs = getattr(session.provider(name), "needs", ())
    fit = [b for b in local if all(b.artefact(kind).exists() for kind in needs)]
    if fit or (local and not machine.box_url):  # none that fits: `usable` says why
        return max(fit or local, key=lambda b: (sort_key(b.version), b.meta.built))
    if not machine.box_url:
        have = sorted({b.version for b in store.boxes() if b.name == machine.box})
        if have:
            raise VboxError(f"{name}: the store has {machine.box} {', '.join(have)}, none of them {constraint}",
                            hint="set box_url to a catalog that has one, or change box_version")
        raise VboxError(f"{name}: no box named {machine.box!r} in the store ({store.root})",
                        hint=f"run `env box build {machine.box}`, `env box import FILE`, or set box_url")
    return _fetch(session, name, machine, constraint)


# a catalog's providers whose boxes a machine of each provider can use, best first: vbox's
# own archives, then a Vagrant box it boots (boxes/vagrant.py: a VirtualBox or VMware disk
# converted last); Xen needs vbox's kernel
CATALOG_PROVIDERS = {"kvm": ("vbox", "libvirt", "virtualbox", "vmware_desktop"), "lxc": ("vbox", "lxc"),
                     "xen": ("vbox",)}


def _fetch(session, name: str, machine, constraint):
    from boxes.catalog import CatalogError, locate, obtain
    from vbox_cli.paths import vbox_cache

    events = session.events
    where = locate(machine.box_url, base=session.loaded.project_dir, confine=session.loaded.project_dir)
    started, shown = time.monotonic(), [-1]

    def progress(done: int, total: int) -> None:
        step = int(50 * done / total) if total else 0
        if step != shown[0]:
            shown[0] = step
            events.phase(name, Phase.DOWNLOADING,
                         f"{machine.box}: {byte_progress(done, total, time.monotonic() - started)}")

    events.phase(name, Phase.DOWNLOADING, f"{machine.box} from {where}")
    try:
        box = obtain(session.store, machine.box, where, constraint, vbox_cache() / "downloads", progress,
                     on_wait=lambda: events.note(f"{name}: waiting for another command fetching the same box", name),
                     on_phase=lambda what: events.phase(name, Phase.VERIFYING, f"{machine.box}: sha256 and digests"),
                     providers=CATALOG_PROVIDERS.get(machine.provider, ("vbox",)))
    except CatalogError as exc:
        raise VboxError(f"{name}: box {machine.box}: {exc.message}", hint=exc.hint) from None
    events.note(f"{name}: added box {box.name} {box.version} ({box.digest[:19]}) from {where}", name)
    return box
