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


def copy_volume(src_conn, vol, dst_conn, dst_pool, name: str, progress=None, target=None) -> int:
    """A volume's file copied whole, byte for byte, from one host's pool into another's:
    into `target` (a volume made beforehand: a qcow2 overlay on the same base, whose
    backing the pool sees from the start), else into a new raw volume (libvirt finds a
    qcow2 in it when the pool is refreshed). Returns the bytes sent."""
    from providers.storage import create_raw, delete_volume, send_all

    info = ET.fromstring(vol.XMLDesc(0))
    size = int(info.findtext("physical") or 0) or vol.info()[1]  # the file's length (a qcow2's, not its disk's)
    mode = info.findtext("target/permissions/mode") or "0600"
    if target is None:
        delete_volume(dst_pool, name)
        target = create_raw(dst_pool, name, size, int(mode, 8))
    down, up = src_conn.newStream(0), dst_conn.newStream(0)
    sent = 0
    try:
        vol.download(down, 0, size, 0)
        target.upload(up, 0, size, 0)
        while data := down.recv(CHUNK):
            if isinstance(data, int):
                continue
            send_all(up, data)
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
    identity file there, its disks given by path (a Xen guest's) there, its console logged
    where the target keeps logs ("" for none)."""
    root = ET.fromstring(xml)
    for tag, kind in (("os/kernel", "kernel"), ("os/initrd", "initrd")):
        element = root.find(tag)
        if element is not None and kind in paths:
            element.text = paths[kind]
    for source in root.findall("devices/disk[@type='file']/source"):
        name = (source.get("file") or "").rsplit("/", 1)[-1]
        if name in volume_paths:
            source.set("file", volume_paths[name])
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


def move(provider, spec, target, target_spec, cold: bool, progress=None) -> Migration:
    """A KVM machine of `provider` to `target`'s host: live while it runs (its disk's own
    layer copied with its memory), cold when it is stopped or `cold` (shut down, its
    volumes and snapshots copied whole; the caller starts it there)."""
    import libvirt

    from providers.base import Capability, supports
    from providers.libvirt_domain import mac_address
    from providers.network import add_dhcp_host, remove_dhcp_host
    from providers.storage import (POOL, base_volumes, bases_lock, create_overlay, delete_volume, ensure_pool,
                                   read_volume, remove_unused_bases, upload_volume)

    obj = spec.object_name
    dom = provider._existing(obj)
    if getattr(provider, "session_mode", False) or getattr(target, "session_mode", False):
        raise VboxError(f"{obj}: a user's libvirt session has no project network to move a machine in or out of")
    if spec.box.meta.boot.hypervisor:
        raise VboxError(f"{obj} boots Xen: a Xen host machine is not moved (its guests would be left behind)")
    if supports(provider, Capability.SUSPEND) and provider.suspended(obj):
        raise VboxError(f"{obj} is suspended: its saved memory does not move", hint="`env resume` it first")
    if ET.fromstring(dom.XMLDesc(0)).find("devices/filesystem/driver[@type='virtiofs']") is not None:
        raise VboxError(f"{obj} has synced folders (virtiofs), whose state QEMU cannot move",
                        hint="set folders = [] for it and `env reload` it")
    running = dom.isActive()
    src_pool = provider.conn.storagePoolLookupByName(POOL)
    pool = ensure_pool(target.conn)
    disk = f"{obj}.qcow2"
    capacity = src_pool.storageVolLookupByName(disk).info()[1]
    extra = [f"{obj}{suffix}" for suffix in provider.extra_volumes
             if _find_volume(src_pool, f"{obj}{suffix}") is not None]
    made: list[str] = []  # volumes made on the target: gone again if the move fails

    def undo() -> None:
        for name in made:
            delete_volume(pool, name)
        remove_dhcp_host(target.conn, mac_address(obj))

    try:
        with bases_lock():  # its disk on the box's disk there: made before that could go
            paths = base_volumes(target.conn, pool, spec.box)
            overlay = create_overlay(pool, disk, paths["disk"], capacity)
            made.append(disk)
        for name in extra:  # the identity credential, a cloud image's seed: small
            # rewritten for the target's network where the provider says (its resolver names
            # the network's DNS), else copied whole
            rewrite = getattr(provider, "identity_volume", None)
            fresh = None
            if rewrite is not None:
                fresh = rewrite(name[len(obj):], read_volume(provider.conn, src_pool.storageVolLookupByName(name)),
                                target_spec)
            if fresh is not None:
                upload_volume(target.conn, pool, name, fresh, mode=0o600)
            else:
                copy_volume(provider.conn, src_pool.storageVolLookupByName(name), target.conn, pool, name)
            made.append(name)
        volume_paths = {name: pool.storageVolLookupByName(name).path() for name in (disk, *extra)}
        source_xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_SECURE
                                 | (0 if running else libvirt.VIR_DOMAIN_XML_INACTIVE))
        console = "" if target.remote else str(target_spec.console_log)
        persist = target_xml(source_xml, paths, volume_paths, console)
        if target_spec.network:
            add_dhcp_host(target.conn, target_spec.network, mac_address(obj), target_spec.address,
                          target_spec.machine.hostname.split(".")[0])
        if running and not cold:  # QEMU fills the overlay made there with what its disk's own layer holds
            result = live(dom, target.conn, as_files(persist, volume_paths), persist,
                                    _disk_targets(dom, disk), migration_address(target, provider), progress)
        else:
            started = time.monotonic()
            if running:
                provider.halt(obj, 60)
            vol = src_pool.storageVolLookupByName(disk)
            check_backing(vol, paths["disk"])
            copied = copy_volume(provider.conn, vol, target.conn, pool, disk, progress, target=overlay)
            snapshots = snapshot_definitions(dom) if supports(provider, Capability.SNAPSHOTS) else []  # Xen: none
            moved = target.conn.defineXML(persist)
            try:
                define_snapshots(moved, snapshots)
            except libvirt.libvirtError:
                moved.undefineFlags(provider._undefine_flags())
                raise
            dom.undefineFlags(provider._undefine_flags())  # from here on it is there (stopped: the caller starts it)
            result = Migration("cold", time.monotonic() - started, None, copied)
    except BaseException:
        undo()
        if running and provider._domain(obj) is not None and not provider._domain(obj).isActive():
            try:  # a cold move that failed: it runs again where it was
                provider._domain(obj).create()
            except libvirt.libvirtError:
                pass
        raise
    if result.kind == "live" and target_spec.network:
        try:
            renew_address(target._existing(obj), target.conn.networkLookupByName(target_spec.network),
                                    mac_address(obj), target_spec.address)
        except libvirt.libvirtError:
            pass  # it asks for its address there when its lease runs out (the caller waits for SSH)
    # gone from here: its definition went with the migration; its volumes and address go now
    remove_dhcp_host(provider.conn, mac_address(obj))
    for name in (disk, *extra):
        delete_volume(src_pool, name)
    if not provider.remote and hasattr(provider, "_shares_dir"):  # a KVM machine's synced folders
        from providers import virtiofs

        virtiofs.release(provider._shares_dir(obj))
    remove_unused_bases(src_pool)
    return result


def _find_volume(pool, name: str):
    from providers.hosts import find

    return find(pool.storageVolLookupByName, name)


def _disk_targets(dom, volume: str) -> list[str]:
    """The target devices (vda) of the disks that are the machine's own volume."""
    return [d.find("target").get("dev") for d in own_disks(ET.fromstring(dom.XMLDesc(0)), volume)]


def migration_address(target, source) -> str | None:
    """The target host's address as the QEMU of `source`'s host reaches it: a machine of the
    Envfile by its address; this host, from a guest of such a machine, by the project
    network's gateway; otherwise the host's name in the URI (None: libvirt asks it)."""
    if target.access is not None and target.access.remote:
        return target.access.ssh_host
    if not target.remote and source.access is not None and source.access.machine:
        return _gateway_seen_by(target, source)
    return None


def _gateway_seen_by(target, source) -> str | None:
    """This host's address on the vbox network where the machine that hosts `source`'s
    guests is."""
    for net in target.conn.listAllNetworks():
        if not net.name().startswith("vbox-") or not net.isActive():
            continue
        ip = ET.fromstring(net.XMLDesc(0)).find("ip")
        if ip is not None and _same_subnet(ip.get("address"), ip.get("netmask"), source.access.ssh_host):
            return ip.get("address")
    return None


def _same_subnet(address: str | None, netmask: str | None, other: str) -> bool:
    import ipaddress

    if not address:
        return False
    network = ipaddress.ip_network(f"{address}/{netmask or '255.255.255.0'}", strict=False)
    return ipaddress.ip_address(other) in network
