"""Warm starts (providers/kvm_warm.py), what needs no libvirtd: libvirt's image header
rewritten in place, a machine's domain made from an image's, the image's key."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest

from providers import kvm_warm
from vbox_cli.errors import VboxError

MACHINE = """<domain type='qemu'>
  <name>vbox-p-abc-web</name>
  <uuid>11111111-2222-3333-4444-555555555555</uuid>
  <metadata><vbox:machine xmlns:vbox='https://vbox.dev/xmlns/machine/1' project='p-abc' machine='web'/>
    <vboxnew:new xmlns:vboxnew='https://vbox.dev/xmlns/new/1'/></metadata>
  <memory unit='KiB'>1048576</memory>
  <currentMemory unit='KiB'>524288</currentMemory>
  <vcpu placement='static' current='1'>2</vcpu>
  <sysinfo type='fwcfg'><entry name='opt/io.systemd.credentials/tmpfiles.extra' file='/img/vbox-p-abc-web.cred'/></sysinfo>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>/img/box.vmlinuz</kernel>
    <cmdline>root=LABEL=vbox-root rw console=ttyS0 systemd.hostname=web net.ifnames=0</cmdline></os>
  <devices>
    <disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>
      <source pool='vbox' volume='vbox-p-abc-web.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <interface type='network'><source network='vbox-p-abc'/><mac address='52:54:00:aa:bb:cc'/>
      <model type='virtio'/></interface>
    <serial type='pty'><log file='/proj/.vbox/console/web.log' append='on'/><target port='0'/></serial>
    <console type='pty'><log file='/proj/.vbox/console/web.log' append='on'/><target type='serial' port='0'/></console>
  </devices>
</domain>"""


def test_the_key_is_the_shape_not_the_machine():
    root = ET.fromstring(MACHINE)
    other = ET.fromstring(MACHINE.replace("web", "db").replace("p-abc", "q-def").replace("aa:bb:cc", "dd:ee:ff")
                          .replace("11111111", "99999999"))
    key = kvm_warm.key_of(root, 6 << 30, (9000000, 7002000))
    assert kvm_warm.key_of(other, 6 << 30, (9000000, 7002000)) == key  # another machine, another project
    bigger = ET.fromstring(MACHINE.replace("<currentMemory unit='KiB'>524288", "<currentMemory unit='KiB'>786432"))
    assert kvm_warm.key_of(bigger, 6 << 30, (9000000, 7002000)) != key
    assert kvm_warm.key_of(root, 7 << 30, (9000000, 7002000)) != key  # its disk's size
    assert kvm_warm.key_of(root, 6 << 30, (9000000, 8000000)) != key  # another QEMU


def test_the_image_domain_waits_for_its_identity_and_is_nobody_s():
    key = kvm_warm.key_of(ET.fromstring(MACHINE), 6 << 30, (1, 2))
    image = ET.fromstring(kvm_warm.image_domain(ET.fromstring(MACHINE), key, "/img/warm.qcow2", "/img/warm.cred",
                                                "/warm/x.log"))
    assert image.findtext("name") == f"vbox-warm-{key}"
    assert image.find("metadata") is None  # not a machine of any project
    assert image.findtext("os/cmdline").split()[-2:] == ["systemd.hostname=vbox-warm", "vbox.identity=channel"]
    assert image.find("devices/disk/source").attrib == {"file": "/img/warm.qcow2"}
    assert image.find("devices/interface/mac").get("address") == kvm_warm.image_mac(key)
    assert image.find("devices/channel/target").attrib == {"type": "virtio", "name": "org.vbox.identity"}
    assert image.find("sysinfo/entry").get("file") == "/img/warm.cred"
    assert "web" not in ET.tostring(image, encoding="unicode")


def test_a_machine_domain_from_the_saved_one_is_the_machine_s():
    key = "0123456789abcdef"
    saved = kvm_warm.image_domain(ET.fromstring(MACHINE), key, "/img/warm.qcow2", "/img/warm.cred", "/warm/x.log")
    saved = saved.replace("<channel type=\"unix\">", "<channel type=\"unix\"><source mode='bind' path='/run/x'/>")
    root = ET.fromstring(saved)
    assert root.find("devices/channel/source") is not None  # as libvirt saves it
    root.find("devices/interface/source").set("bridge", "vbx-123")
    ET.SubElement(root.find("devices/interface"), "target", dev="vnet3")
    persistent = ET.fromstring(MACHINE)
    mine = ET.fromstring(kvm_warm.machine_domain(ET.tostring(root, encoding="unicode"), persistent))
    assert (mine.findtext("name"), mine.findtext("uuid")) == ("vbox-p-abc-web", "11111111-2222-3333-4444-555555555555")
    assert mine.find("metadata/{https://vbox.dev/xmlns/machine/1}machine").get("machine") == "web"
    assert [e.tag for e in mine.find("metadata")] == ["{https://vbox.dev/xmlns/machine/1}machine"]  # not the mark
    assert mine.find("devices/disk").get("type") == "volume"
    assert mine.find("devices/disk/source").attrib == {"pool": "vbox", "volume": "vbox-p-abc-web.qcow2"}
    assert mine.find("devices/interface/mac").get("address") == "52:54:00:aa:bb:cc"
    assert mine.find("devices/interface/source").attrib == {"network": "vbox-p-abc"}
    assert mine.find("devices/interface/target") is None
    assert mine.find("devices/serial/log").get("file") == "/proj/.vbox/console/web.log"
    assert mine.find("sysinfo/entry").get("file") == "/img/vbox-p-abc-web.cred"
    # a reboot is a cold boot of the machine itself: its own command line
    assert mine.findtext("os/cmdline") == persistent.findtext("os/cmdline")
    assert mine.find("devices/channel/source") is None  # libvirt makes the socket's path


def _image(path, xml: bytes, cookie: bytes, stream: bytes, room: int = 4096):
    data = (xml + b"\0" + cookie + b"\0").ljust(room, b"\0")
    head = struct.pack("<16s5I56s", b"LibvirtQemudSave", 2, room, 1, 0, len(xml) + 1, b"\0" * 56)
    path.write_bytes(head + data + stream)


def test_the_header_is_rewritten_in_place_and_the_stream_kept(tmp_path):
    path = tmp_path / "x.save"
    stream = b"QEVM" + bytes(range(256)) * 40
    _image(path, b"<domain><name>old</name></domain>", b"<cookie/>", stream)
    xml, cookie, room = kvm_warm.read_header(path)
    assert (xml, cookie, room) == ("<domain><name>old</name></domain>", b"<cookie/>", 4096)
    kvm_warm.write_header(path, "<domain><name>a much longer name than before</name></domain>")
    xml, cookie, room = kvm_warm.read_header(path)
    assert (xml, cookie, room) == ("<domain><name>a much longer name than before</name></domain>", b"<cookie/>", 4096)
    assert path.read_bytes()[-len(stream):] == stream
    assert path.stat().st_size == 92 + 4096 + len(stream)
    with pytest.raises(VboxError, match="longer than the room"):
        kvm_warm.write_header(path, "<domain>" + "x" * 5000 + "</domain>")
    assert kvm_warm.read_header(path)[0].startswith("<domain><name>a much")  # unchanged


def test_an_image_vbox_cannot_rewrite_is_refused(tmp_path):
    path = tmp_path / "x.save"
    path.write_bytes(b"LibvirtQemudPart" + b"\0" * 200)  # a save cut short
    with pytest.raises(VboxError, match="not a saved domain vbox can rewrite"):
        kvm_warm.read_header(path)
    path.write_bytes(b"short")
    with pytest.raises(VboxError, match="too short"):
        kvm_warm.read_header(path)


def test_the_identity_message_carries_the_credential_and_names_macs():
    message = kvm_warm.identity_message(b"f+~ /etc/hostname 0644 root root - d2ViCg==\n", "52:54:00:00:00:01",
                                        "52:54:00:aa:bb:cc", "ab" * 16).decode()
    lines = message.splitlines()
    assert [line.split()[0] for line in lines] == ["time", "mac", "machine-id", "random", "tmpfiles", "end"]
    assert lines[1] == "mac 52:54:00:00:00:01 52:54:00:aa:bb:cc"
    import base64

    assert base64.b64decode(lines[4].split()[1]).startswith(b"f+~ /etc/hostname")
    assert lines[3] != kvm_warm.identity_message(b"", "a", "b", "c").decode().splitlines()[3]  # fresh randomness


def _spec(tmp_path, **changes):
    kernel = tmp_path / "vmlinuz"
    kernel.write_text("k")
    box = SimpleNamespace(name="debian-12", version="12.0.15", artefact=lambda kind: kernel,
                          meta=SimpleNamespace(features=["virtiofs", "identity-channel"],
                                               boot=SimpleNamespace(hypervisor=None)))
    values = {"box": box, "folders": (), "networks": (), "network": "vbox-p-abc", **changes}
    return SimpleNamespace(**values)


def test_who_starts_warm(tmp_path, monkeypatch):
    here = SimpleNamespace(remote=False, session_mode=False, group_mode=False)
    assert kvm_warm.why_not(here, _spec(tmp_path)) is None
    assert "system libvirt" in kvm_warm.why_not(SimpleNamespace(remote=True, session_mode=False, group_mode=False),
                                                 _spec(tmp_path))
    assert kvm_warm.why_not(here, _spec(tmp_path, folders=("x",))) is None  # plugged in after the restore
    from providers import virtiofs

    monkeypatch.setattr(virtiofs, "missing", lambda: "no virtiofsd")
    assert "not served here" in kvm_warm.why_not(here, _spec(tmp_path, folders=("x",)))
    assert "extra networks" in kvm_warm.why_not(here, _spec(tmp_path, networks=("x",)))
    old = _spec(tmp_path)
    old.box.meta.features = ["virtiofs"]
    assert "no identity service" in kvm_warm.why_not(here, old)
    monkeypatch.setenv("VBOX_WARM", "0")
    assert kvm_warm.why_not(here, _spec(tmp_path)) == "VBOX_WARM=0"


def test_only_the_images_used_last_are_kept(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("VBOX_HOME", str(tmp_path))
    folder = kvm_warm.warm_dir()
    folder.mkdir()
    for i, key in enumerate("abcdef"):
        for suffix in (".save", ".log", ".json"):
            (folder / f"{key}{suffix}").write_text(key)
        os.utime(folder / f"{key}.save", (1000 + i, 1000 + i))  # f used last
    (folder / "c.qcow2").write_text("its disk")
    with kvm_warm._locked("b"):  # in use by another command: kept
        kvm_warm._prune(keep=2)
    assert sorted(p.name for p in folder.glob("*.save")) == ["b.save", "e.save", "f.save"]
    assert not (folder / "a.log").exists() and not (folder / "c.json").exists() and not (folder / "c.qcow2").exists()
    assert (folder / "b.log").exists()


def test_a_box_s_images_go_with_it(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("VBOX_HOME", str(tmp_path))
    folder = kvm_warm.warm_dir()
    folder.mkdir()
    for key, version in (("old", "12.0.14"), ("new", "12.0.15")):
        (folder / f"{key}.save").write_text(key)
        (folder / f"{key}.json").write_text(json.dumps({"box": "debian-12", "version": version}))
    assert kvm_warm.forget(SimpleNamespace(name="debian-12", version="12.0.14")) == 1
    assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) == ["new.json", "new.save"]


FOLDERS = MACHINE.replace("net.ifnames=0</cmdline>", "net.ifnames=0 vbox.folder=vbox0,rw,vbox</cmdline>").replace(
    "  </devices>", """    <filesystem type='mount' accessmode='passthrough'><driver type='virtiofs' queue='1024'/>
      <source dir='/var/lib/vbox/shares/vbox-p-abc-web/vbox0'/><target dir='vbox0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x06' function='0x0'/></filesystem>
  </devices>""")


def test_synced_folders_are_plugged_in_after_the_restore():
    root = ET.fromstring(FOLDERS)
    two = ET.fromstring(FOLDERS.replace("vbox.folder=vbox0,rw,vbox", "vbox.folder=vbox0,rw,vbox vbox.folder=vbox1,ro,srv"))
    assert kvm_warm.key_of(root, 1, (1, 2)) == kvm_warm.key_of(two, 1, (1, 2))  # folders are not the image's
    image = ET.fromstring(kvm_warm.image_domain(root, "k", "/d", "/c", "/l"))
    assert image.find("devices/filesystem") is None and "vbox.folder" not in image.findtext("os/cmdline")
    assert kvm_warm.folder_words(root) == ["vbox0,rw,vbox"]
    message = kvm_warm.identity_message(b"", "a", "b", "c", kvm_warm.folder_words(two)).decode().splitlines()
    assert message[-3:] == ["folder vbox0,rw,vbox", "folder vbox1,ro,srv", "end"]
