"""A warm image's domain and file (providers/kvm_warm.py): the image's key (what makes two
machines' boots the same), the domain it is made from, a machine's domain made from the
saved one, and libvirt's header of a saved domain, where that domain is written."""

from __future__ import annotations

import hashlib
import struct
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from vbox_cli.errors import VboxError

CHANNEL = "org.vbox.identity"
CMDLINE_WORD = "vbox.identity=channel"
METADATA_NS = "https://vbox.dev/xmlns/machine/1"

# libvirt's header of a saved domain (src/qemu/qemu_saveimage.h, virQEMUSaveHeader):
# magic, version, data_len (the XML and the cookie, NUL-terminated, padded), was_running,
# format (0: raw), cookieOffset, 14 unused words; QEMU's migration stream follows the data.
_HEADER = struct.Struct("<16s5I56s")
_MAGIC = b"LibvirtQemudSave"


# -- the image's key and its domain ----------------------------------------------------

def key_of(root: ET.Element, capacity: int, versions: tuple[int, int]) -> str:
    """What makes two machines' boots the same: their domain without what is theirs alone,
    their disk's size, libvirt's and QEMU's versions."""
    shape = _generic(root)
    text = ET.tostring(shape, encoding="unicode") + f"\ncapacity={capacity}\nversions={versions}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _generic(root: ET.Element) -> ET.Element:
    root = ET.fromstring(ET.tostring(root))
    for tag in ("name", "uuid", "metadata"):
        for element in root.findall(tag):
            root.remove(element)
    for entry in root.findall("sysinfo/entry"):
        entry.set("file", "")
    cmdline = root.find("os/cmdline")
    if cmdline is not None:
        cmdline.text = " ".join(_shared_words(cmdline.text))
    _unplug_folders(root)
    for source in root.findall("devices/disk/source"):
        source.attrib = {}
    for interface in root.findall("devices/interface"):
        for child in list(interface):
            if child.tag in ("mac", "source"):
                interface.remove(child)
    for log in root.findall("devices/serial/log") + root.findall("devices/console/log"):
        log.set("file", "")
    return root


def _shared_words(cmdline: str | None) -> list[str]:
    """The kernel command line's words but the machine's own: its name, its folders."""
    from providers.virtiofs import KEY

    return [w for w in (cmdline or "").split() if not w.startswith(("systemd.hostname=", KEY))]


def _unplug_folders(root: ET.Element) -> list[ET.Element]:
    """The synced folders' devices taken out of a domain (QEMU cannot save them: they are
    plugged in after the restore); those devices."""
    devices = root.find("devices")
    taken = [fs for fs in devices.findall("filesystem") if fs.find("driver[@type='virtiofs']") is not None]
    for fs in taken:
        devices.remove(fs)
    return taken


def folder_words(persistent: ET.Element) -> list[str]:
    """TAG,MODE,PATH of each synced folder, as the machine's command line names them."""
    from providers.virtiofs import KEY

    return [w[len(KEY):] for w in (persistent.findtext("os/cmdline") or "").split() if w.startswith(KEY)]


def image_domain(root: ET.Element, key: str, disk: str, credential: str, log: str) -> str:
    """The domain the image is made from: the machine's, named for the image, waiting for
    its identity on the port."""
    root = ET.fromstring(ET.tostring(root))
    name = f"vbox-warm-{key}"
    root.find("name").text = name
    root.find("uuid").text = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{METADATA_NS}#{name}"))
    for element in root.findall("metadata"):
        root.remove(element)
    for entry in root.findall("sysinfo/entry"):
        entry.set("file", credential)
    cmdline = root.find("os/cmdline")
    cmdline.text = " ".join([*_shared_words(cmdline.text), "systemd.hostname=vbox-warm", CMDLINE_WORD])
    _unplug_folders(root)
    for element in root.findall("devices/disk"):
        if element.find("target").get("dev") == "vda":
            element.set("type", "file")
            element.find("source").attrib = {"file": disk}
    for interface in root.findall("devices/interface"):
        interface.find("mac").set("address", image_mac(key))
    for element in root.findall("devices/serial/log") + root.findall("devices/console/log"):
        element.set("file", log)
    devices = root.find("devices")
    channel = ET.SubElement(devices, "channel", type="unix")
    ET.SubElement(channel, "target", type="virtio", name=CHANNEL)
    return ET.tostring(root, encoding="unicode")


def image_mac(key: str) -> str:
    digest = hashlib.sha256(f"warm-{key}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def machine_domain(saved: str, persistent: ET.Element) -> str:
    """The image's saved domain made the machine's: its name, UUID, metadata, disk,
    network card, console log, credential and command line (what a reboot uses)."""
    root = ET.fromstring(saved)
    for tag in ("name", "uuid"):
        root.find(tag).text = persistent.find(tag).text
    for element in root.findall("metadata"):
        root.remove(element)
    metadata = persistent.find("metadata")
    if metadata is not None:  # vbox's record of the machine (not the mark of a first start)
        metadata = ET.fromstring(ET.tostring(metadata))
        for element in list(metadata):
            if not element.tag.startswith(f"{{{METADATA_NS}}}"):
                metadata.remove(element)
        root.insert(2, metadata)
    for entry, own in zip(root.findall("sysinfo/entry"), persistent.findall("sysinfo/entry")):
        entry.set("file", own.get("file"))
    root.find("os/cmdline").text = persistent.find("os/cmdline").text
    own_disk = next(d for d in persistent.findall("devices/disk") if d.find("target").get("dev") == "vda")
    for element in root.findall("devices/disk"):
        if element.find("target").get("dev") == "vda":
            element.set("type", own_disk.get("type"))
            source = element.find("source")
            source.attrib = dict(own_disk.find("source").attrib)
            for child in list(source):
                source.remove(child)
            for child in element.findall("backingStore"):
                element.remove(child)
    for interface, own in zip(root.findall("devices/interface"), persistent.findall("devices/interface")):
        interface.find("mac").set("address", own.find("mac").get("address"))
        source = interface.find("source")
        source.attrib = {"network": own.find("source").get("network")}
        for child in ("target", "alias"):  # the host's tap device and libvirt's alias: made anew
            for element in interface.findall(child):
                interface.remove(element)
    own_log = persistent.find("devices/serial/log")
    for serial in root.findall("devices/serial") + root.findall("devices/console"):
        log = serial.find("log")
        if log is not None and own_log is not None:
            log.set("file", own_log.get("file"))
        elif log is not None:
            serial.remove(log)
    for channel in root.findall("devices/channel"):  # libvirt makes the socket's path
        for source in channel.findall("source"):
            channel.remove(source)
    return ET.tostring(root, encoding="unicode")


# -- libvirt's image file ------------------------------------------------------------------

def read_header(path: Path) -> tuple[str, bytes, int]:
    """(domain XML, cookie, data length) of a saved domain."""
    with open(path, "rb") as f:
        head = f.read(_HEADER.size)
        if len(head) < _HEADER.size:
            raise VboxError(f"{path}: not a saved domain (too short)")
        magic, version, length, _running, fmt, cookie_at, _ = _HEADER.unpack(head)
        if magic != _MAGIC or version != 2 or fmt != 0:
            raise VboxError(f"{path}: not a saved domain vbox can rewrite (magic {magic!r}, version {version}, "
                            f"format {fmt})")
        data = f.read(length)
    xml = data[:data.index(b"\0")].decode()
    cookie = data[cookie_at:data.index(b"\0", cookie_at)] if cookie_at else b""
    return xml, cookie, length


def write_header(path: Path, xml: str) -> None:
    """Put `xml` in place of the saved domain's XML; QEMU's stream after it is not touched."""
    _, cookie, length = read_header(path)
    data = xml.encode() + b"\0"
    cookie_at = len(data) if cookie else 0
    if cookie:
        data += cookie + b"\0"
    if len(data) > length:
        raise VboxError(f"{path}: the machine's domain is longer than the room the image has for it")
    with open(path, "r+b") as f:
        head = f.read(_HEADER.size)
        magic, version, _length, running, fmt, _cookie_at, unused = _HEADER.unpack(head)
        f.seek(0)
        f.write(_HEADER.pack(magic, version, length, running, fmt, cookie_at, unused))
        f.write(data.ljust(length, b"\0"))
