"""The libvirt storage pool of vbox's VM disks, and the box images in it.

A machine's disk is a qcow2 volume backed by the box's disk (a base volume), so making
a machine copies nothing. On a local pool the base volumes (disk, kernel, initrd) are
hard links to the box's files: instant, and atomic. Base volumes are named `box-...`,
machine volumes `vbox-PROJECT-MACHINE.qcow2`.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

POOL = "vbox"
KINDS = {"disk": "qcow2", "kernel": "vmlinuz", "initrd": "initrd", "hypervisor": "xen"}


def pool_path() -> Path:
    from vbox_cli.paths import vbox_home

    return vbox_home() / "images"


def ensure_pool(conn):
    import libvirt

    try:
        pool = conn.storagePoolLookupByName(POOL)
    except libvirt.libvirtError:
        path = pool_path()
        path.mkdir(parents=True, exist_ok=True)
        xml = f"<pool type='dir'><name>{POOL}</name><target><path>{path}</path></target></pool>"
        pool = conn.storagePoolDefineXML(xml, 0)
        pool.setAutostart(True)
    if not pool.isActive():
        pool.create(0)
    return pool


def base_name(box, kind: str) -> str:
    return f"box-{box.name}-{box.version}-{box.digest.removeprefix('sha256:')[:12]}.{KINDS[kind]}"


def base_volumes(conn, pool, box) -> dict[str, str]:
    """Paths of the box's disk, kernel and initrd as volumes of the pool (made if missing)."""
    import libvirt

    paths = {}
    target = Path(ET.fromstring(pool.XMLDesc()).findtext("target/path"))
    missing = False
    for kind in (k for k in KINDS if k in box.artefacts):
        name = base_name(box, kind)
        try:
            paths[kind] = pool.storageVolLookupByName(name).path()
        except libvirt.libvirtError:
            source, dest = box.artefact(kind), target / name
            tmp = target / f".{name}.{os.getpid()}"
            try:
                os.link(source, tmp)
            except OSError:  # another file system: copy
                import shutil

                shutil.copy2(source, tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
            missing = True
            paths[kind] = str(dest)
    if missing:
        pool.refresh(0)
    return paths


def overlay_xml(name: str, backing: str, capacity: int) -> str:
    from providers.libvirt_conn import render

    return render("volume.xml.j2", name=name, backing=backing, capacity=capacity)


def create_overlay(pool, name: str, backing: str, capacity: int):
    return pool.createXML(overlay_xml(name, backing, capacity), 0)


def delete_volume(pool, name: str) -> bool:
    import libvirt

    try:
        vol = pool.storageVolLookupByName(name)
    except libvirt.libvirtError:
        return False
    vol.delete(0)
    return True


def unused_bases(pool) -> list[str]:
    """Base volumes that no machine volume is backed by any more."""
    import libvirt

    pool.refresh(0)
    volumes = {}
    for vol in pool.listAllVolumes(0):
        try:
            volumes[vol.name()] = vol
        except libvirt.libvirtError:
            continue
    backing = set()
    for name, vol in volumes.items():
        if name.startswith("vbox-"):
            path = ET.fromstring(vol.XMLDesc(0)).findtext("backingStore/path")
            if path:
                backing.add(Path(path).name)
    used_prefixes = {b.rsplit(".", 1)[0] for b in backing}
    return [n for n in volumes if n.startswith("box-") and n.rsplit(".", 1)[0] not in used_prefixes]
