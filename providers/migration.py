"""Moving a libvirt domain (a KVM machine) from one libvirt host to another.

Live, when it runs: libvirt's migration with the disk copied (QEMU mirrors the machine's
own qcow2 layer over NBD into an overlay made beforehand on the target, on the same box
disk sent up there first) while its memory is copied over TCP; it stops on this side
and goes on on the other, for the time of the last memory round (the downtime). Cold,
when it is stopped: its volumes are copied whole (with the qcow2 snapshots in them) and
its definition and snapshots defined there. Either way, nothing of it stays on the host
it left.

Live migration cannot take a domain's internal snapshots (libvirt refuses a domain that
has any): vbox's own step snapshots (incremental provisioning) are deleted first; any
other snapshot makes the caller choose (`--cold`, or delete it).
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from vbox_cli.errors import VboxError

CHUNK = 1024**2


@dataclass(frozen=True)
class Migration:
    kind: str  # "live" or "cold"
    seconds: float
    downtime_ms: int | None = None  # live: how long the machine was paused for the last round
    copied: int = 0  # bytes of memory (live) or of volumes (cold) sent


def _libvirt():
    import libvirt

    return libvirt


def _download(conn, vol) -> bytes:
    """A (small) volume's content."""
    stream = conn.newStream(0)
    vol.download(stream, 0, 0, 0)
    chunks = []
    try:
        while data := stream.recv(CHUNK):
            if isinstance(data, int):  # -2: would block (not on a blocking stream)
                continue
            chunks.append(data)
        stream.finish()
    except BaseException:
        try:
            stream.abort()
        except Exception:
            pass
        raise
    return b"".join(chunks)


def copy_volume(src_conn, vol, dst_conn, dst_pool, name: str, progress=None, target=None) -> int:
    """A volume's file copied whole, byte for byte, from one host's pool into another's:
    into `target` (a volume made beforehand: a qcow2 overlay on the same base, whose
    backing the pool sees from the start), else into a new raw volume (libvirt finds a
    qcow2 in it when the pool is refreshed). Returns the bytes sent."""
    from providers.storage import delete_volume

    info = ET.fromstring(vol.XMLDesc(0))
    size = int(info.findtext("physical") or 0) or vol.info()[1]  # the file's length (a qcow2's, not its disk's)
    mode = info.findtext("target/permissions/mode") or "0600"
    if target is None:
        delete_volume(dst_pool, name)
        xml = (f"<volume><name>{name}</name><capacity unit='bytes'>{size}</capacity>"
               f"<allocation unit='bytes'>0</allocation><target><format type='raw'/>"
               f"<permissions><mode>{int(mode, 8):04o}</mode></permissions></target></volume>")
        target = dst_pool.createXML(xml, 0)
    down, up = src_conn.newStream(0), dst_conn.newStream(0)
    sent = 0
    try:
        vol.download(down, 0, size, 0)
        target.upload(up, 0, size, 0)
        while data := down.recv(CHUNK):
            if isinstance(data, int):
                continue
            view = memoryview(data)
            while view:
                n = up.send(view.tobytes())
                view = view[n:]
            sent += len(data)
            if progress is not None:
                progress(sent, size)
        down.finish()
        up.finish()
    except BaseException:
        for stream in (down, up):
            try:
                stream.abort()
            except Exception:
                pass
        delete_volume(dst_pool, name)
        raise
    dst_pool.refresh(0)
    return sent


def own_disks(root: ET.Element, volume: str) -> list[ET.Element]:
    """The domain's disks on the machine's own volume: a pool volume, or (a machine migrated
    live, until it starts again) the file that volume is."""
    return [d for d in root.findall("devices/disk")
            if (d.find("source") is not None and (d.find("source").get("volume") == volume
                                                  or (d.find("source").get("file") or "").endswith("/" + volume)))]


def target_xml(xml: str, paths: dict[str, str], volume_paths: dict[str, str], console_log: str) -> str:
    """The domain's definition for the target host: the box's kernel and initrd there, its
    identity file there, its console logged where the target keeps logs ("" for none)."""
    root = ET.fromstring(xml)
    for tag, kind in (("os/kernel", "kernel"), ("os/initrd", "initrd")):
        element = root.find(tag)
        if element is not None and kind in paths:
            element.text = paths[kind]
    for entry in root.findall("sysinfo/entry"):
        name = entry.get("file", "").rsplit("/", 1)[-1]
        if name in volume_paths:
            entry.set("file", volume_paths[name])
    for serial in root.findall("devices/serial"):
        log = serial.find("log")
        if log is not None:
            serial.remove(log)
        if console_log:
            ET.SubElement(serial, "log", file=console_log, append="on")
    return ET.tostring(root, encoding="unicode")


def as_files(xml: str, volume_paths: dict[str, str]) -> str:
    """The same definition with each pool volume as the file it is on the target: libvirt
    makes the NBD target of a disk it copies only from a file disk (a volume disk it would
    try to pre-create, which it does not do for an incremental copy)."""
    root = ET.fromstring(xml)
    for disk in root.findall("devices/disk"):
        source = disk.find("source")
        if source is not None and source.get("volume") in volume_paths:
            path = volume_paths[source.get("volume")]
            disk.set("type", "file")
            source.attrib.clear()
            source.set("file", path)
    return ET.tostring(root, encoding="unicode")


def user_snapshots(dom, own_prefix: str) -> list[str]:
    return [s.getName() for s in dom.listAllSnapshots(0) if not s.getName().startswith(own_prefix)]


def live(dom, dst_conn, dest_xml: str, persist_xml: str, disks: list[str], address: str | None,
         progress=None) -> Migration:
    """Migrate the running domain to dst_conn's host, its disks (`disks`, by target) copied
    on top of the overlays made there; `address`: the target host as the source host
    reaches it (None: libvirt's own choice, the target's host name)."""
    import threading

    libvirt = _libvirt()
    params = {libvirt.VIR_MIGRATE_PARAM_DEST_XML: dest_xml, libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: persist_xml,
              libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS: disks}
    if address:
        params[libvirt.VIR_MIGRATE_PARAM_URI] = f"tcp://{_uri_host(address)}"
        params[libvirt.VIR_MIGRATE_PARAM_DISKS_URI] = f"tcp://{_uri_host(address)}"
    flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
             | libvirt.VIR_MIGRATE_NON_SHARED_INC | libvirt.VIR_MIGRATE_AUTO_CONVERGE)
    started = time.monotonic()
    done = threading.Event()

    def watch() -> None:  # libvirt's job figures while it runs
        while not done.wait(0.5):
            try:
                stats = dom.jobStats(0)
            except libvirt.libvirtError:
                continue
            if progress is not None and stats.get("data_total"):
                progress(stats.get("data_processed", 0), stats.get("data_total", 0))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        moved = dom.migrate3(dst_conn, params, flags)
    except libvirt.libvirtError as exc:
        raise VboxError(f"libvirt could not migrate it: {exc.get_error_message()}",
                        hint="it still runs where it was") from None
    finally:
        done.set()
        watcher.join()
    seconds = time.monotonic() - started
    try:
        stats = moved.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    except libvirt.libvirtError:
        stats = {}
    return Migration("live", seconds, stats.get("downtime"), stats.get("data_processed", 0))


def _uri_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def renew_address(dom, network, mac: str, address: str, attempts: int = 3) -> bool:
    """The guest's link goes down and up again: its DHCP client (networkd) asks the new
    host's network (`network`, a libvirt network) for its address at once, instead of
    keeping the old lease until it runs out. Checked: the network's DHCP server must have
    given `address` to `mac` since; tried again with the link down longer (a guest under
    emulation, busy just after the move, may miss a short drop). Whether it was given."""
    libvirt = _libvirt()
    root = ET.fromstring(dom.XMLDesc(0))
    interface = next((i for i in root.findall("devices/interface") if i.get("type") == "network"), None)
    if interface is None:
        return False

    def lease() -> int:
        try:
            found = [entry for entry in network.DHCPLeases(mac) if entry.get("ipaddr") == address]
        except libvirt.libvirtError:
            return 0
        return max((int(entry.get("expirytime") or 0) for entry in found), default=0)

    for attempt in range(attempts):
        before = lease()
        for state in ("down", "up"):
            link = interface.find("link")
            if link is None:
                link = ET.SubElement(interface, "link")
            link.set("state", state)
            dom.updateDeviceFlags(ET.tostring(interface, encoding="unicode"), libvirt.VIR_DOMAIN_AFFECT_LIVE)
            if state == "down":
                time.sleep(1.0 + 2.0 * attempt)  # long enough for networkd to see the carrier go
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if lease() > before:
                return True
            time.sleep(0.5)
    return False


def snapshot_definitions(dom) -> list[str]:
    """Its snapshots' definitions, parents first (for REDEFINE on another host)."""
    libvirt = _libvirt()
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL
    return [snap.getXMLDesc(libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE) for snap in dom.listAllSnapshots(flags)]


def define_snapshots(dom, definitions: list[str]) -> None:
    libvirt = _libvirt()
    for xml in definitions:
        dom.snapshotCreateXML(xml, libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE)


def check_backing(vol, expected: str) -> None:
    """A qcow2 overlay copied as it is names its base by path: the target's base must be there."""
    backing = ET.fromstring(vol.XMLDesc(0)).findtext("backingStore/path")
    if backing and backing != expected:
        raise VboxError(f"its disk's base is {backing} here and would be {expected} on the target",
                        hint="migrate it while it runs (live), or between hosts whose vbox pools are at one path")
