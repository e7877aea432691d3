"""Snapshots of a KVM machine's disk: internal snapshots of its qcow2 overlay, kept by
libvirt (its snapshot list, revert and delete work on this host and on a remote one).

Disk only, for a stopped and a running machine alike. libvirt 9.0 takes an internal
snapshot of a running machine only with its memory ("internal snapshot of a running VM
must include the memory state"), and QEMU cannot save the memory of a machine with synced
folders ("non-migratable device: vhost-user-fs"), which most machines have. So a running
machine's disk is snapshotted by QEMU itself (QMP `blockdev-snapshot-internal-sync`: atomic,
a few milliseconds, metadata only), and the snapshot is then told to libvirt (a REDEFINE,
as a shut-off snapshot), which restores and deletes it as one of its own. Restoring needs
the machine stopped: it boots from the restored disk.
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET

from providers.base import Snapshot, check_snapshot_name
from vbox_cli.errors import VboxError


def _libvirt():
    import libvirt

    return libvirt


def snapshots(dom) -> list[Snapshot]:
    found = []
    for snap in dom.listAllSnapshots():
        root = ET.fromstring(snap.getXMLDesc())
        try:
            info = json.loads(root.findtext("description") or "{}")
        except ValueError:
            info = {}
        running = bool(info.get("running")) if isinstance(info, dict) else False
        found.append(Snapshot(snap.getName(), float(root.findtext("creationTime") or 0), running))
    return sorted(found, key=lambda snap: snap.created)


def _disks(root: ET.Element, volume: str) -> tuple[str, list[str]]:
    """(the target of the machine's own disk, the targets of its other disks)."""
    own, others = "", []
    for disk in root.findall("devices/disk"):
        target = disk.find("target")
        if target is None:
            continue
        source = disk.find("source")
        if disk.get("device") == "disk" and source is not None and source.get("volume") == volume:
            own = target.get("dev")
        else:
            others.append(target.get("dev"))
    if not own:
        raise VboxError(f"the domain has no disk on the volume {volume}")
    return own, others


def save(dom, name: str, volume: str) -> Snapshot:
    """Snapshot `name` of the disk on `volume` (the machine's qcow2 overlay)."""
    libvirt = _libvirt()
    check_snapshot_name(name)
    if name in dom.snapshotListNames():
        raise VboxError(f"{dom.name()} has a snapshot named {name} already")
    inactive = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    own, others = _disks(inactive, volume)
    running = bool(dom.isActive())
    created = int(time.time())
    snap = ET.Element("domainsnapshot")
    ET.SubElement(snap, "name").text = name
    ET.SubElement(snap, "description").text = json.dumps({"running": running})
    ET.SubElement(snap, "memory", snapshot="no")
    disks = ET.SubElement(snap, "disks")
    ET.SubElement(disks, "disk", name=own, snapshot="internal")
    for other in others:  # a cloud image's seed, read-only
        ET.SubElement(disks, "disk", name=other, snapshot="no")
    if not running:
        try:
            dom.snapshotCreateXML(ET.tostring(snap, encoding="unicode"), 0)
        except libvirt.libvirtError as exc:
            raise VboxError(f"libvirt could not snapshot {dom.name()}: {exc.get_error_message()}") from None
        return Snapshot(name, float(created), False)
    node = _node_name(dom, own)
    # one of that name that libvirt does not know is what a save killed before the REDEFINE left
    _qmp(dom, "blockdev-snapshot-delete-internal-sync", device=node, name=name, check=False)
    _qmp(dom, "blockdev-snapshot-internal-sync", device=node, name=name)
    try:
        ET.SubElement(snap, "state").text = "shutoff"
        ET.SubElement(snap, "creationTime").text = str(created)
        snap.append(inactive)
        dom.snapshotCreateXML(ET.tostring(snap, encoding="unicode"), libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE)
    except libvirt.libvirtError as exc:
        _qmp(dom, "blockdev-snapshot-delete-internal-sync", device=node, name=name, check=False)
        raise VboxError(f"libvirt did not take the snapshot QEMU made of {dom.name()}: "
                        f"{exc.get_error_message()}") from None
    return Snapshot(name, float(created), True)


def restore(dom, name: str) -> None:
    libvirt = _libvirt()
    if dom.isActive():
        raise VboxError(f"{dom.name()} is running: a snapshot is restored into a stopped machine")
    try:
        dom.revertToSnapshot(_lookup(dom, name), 0)
    except libvirt.libvirtError as exc:
        raise VboxError(f"libvirt could not restore {dom.name()} to {name}: {exc.get_error_message()}") from None


def delete(dom, name: str) -> None:
    libvirt = _libvirt()
    try:
        _lookup(dom, name).delete(0)
    except libvirt.libvirtError as exc:
        raise VboxError(f"libvirt could not delete the snapshot {name} of {dom.name()}: "
                        f"{exc.get_error_message()}") from None


def _lookup(dom, name: str):
    if name not in dom.snapshotListNames():
        raise VboxError(f"{dom.name()} has no snapshot named {name}")
    return dom.snapshotLookupByName(name, 0)


def _node_name(dom, target: str) -> str:
    """QEMU's name of the format node of the disk `target` ("vda") of the running machine."""
    alias = ""
    for disk in ET.fromstring(dom.XMLDesc(0)).findall("devices/disk"):
        if (disk.find("target") is not None and disk.find("target").get("dev") == target
                and disk.find("alias") is not None):
            alias = disk.find("alias").get("name")
    for device in _qmp(dom, "query-block"):
        inserted = device.get("inserted") or {}
        if alias and f"/{alias}/" in device.get("qdev", "") + "/" and inserted.get("node-name"):
            return inserted["node-name"]
    raise VboxError(f"QEMU does not show the disk {target} of {dom.name()}")


def _qmp(dom, command: str, check: bool = True, **arguments):
    """A QMP command sent to the machine's QEMU through libvirt; its `return`."""
    libvirt = _libvirt()
    import libvirt_qemu

    request = {"execute": command, **({"arguments": arguments} if arguments else {})}
    try:
        reply = json.loads(libvirt_qemu.qemuMonitorCommand(dom, json.dumps(request), 0))
    except libvirt.libvirtError as exc:
        if not check:
            return None
        raise VboxError(f"QEMU of {dom.name()} did not take {command}: {exc.get_error_message()}") from None
    if "error" in reply and check:
        raise VboxError(f"QEMU of {dom.name()} refused {command}: {reply['error'].get('desc', reply['error'])}")
    return reply.get("return")
