"""Synced folders and extra networks, the parts without a machine: how a guest path is
written on the kernel command line (as systemd-escape does, which the box's script
undoes), what a KVM domain's definition carries for its folders and networks (and keeps
of nothing earlier), and an LXC machine's network settings."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers import virtiofs
from providers.base import Share

SYSTEMD_ESCAPE = shutil.which("systemd-escape")


@pytest.mark.parametrize("path, expected", [
    ("/vbox", "vbox"),
    ("/srv/data", "srv-data"),
    ("/srv/my app/a-b", "srv-my\\x20app-a\\x2db"),
    ("/.hidden/x.y", "\\x2ehidden-x.y"),
    ("/a//b/./c/", "a-b-c"),
    ("/é", "\\xc3\\xa9"),
    ('/x"$(reboot)`', "x\\x22\\x24\\x28reboot\\x29\\x60"),
])
def test_escape_path(path, expected):
    assert virtiofs.escape_path(path) == expected


_paths = st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/"), min_size=1,
                          max_size=12).filter(lambda p: p not in (".", "..")), min_size=1, max_size=4)


@pytest.mark.skipif(SYSTEMD_ESCAPE is None, reason="systemd-escape is not installed here")
@settings(max_examples=60, deadline=None)
@given(_paths)
def test_escape_path_is_what_systemd_unescapes(parts):
    """The box's script gets the path back with `systemd-escape --unescape --path`; the
    escaped form has no character the kernel's command line or a shell would act on."""
    path = "/" + "/".join(parts)
    escaped = virtiofs.escape_path(path)
    assert all(c.isascii() and (c.isalnum() or c in ":_.-\\") for c in escaped)
    back = subprocess.run([SYSTEMD_ESCAPE, "--unescape", "--path", "--", escaped], capture_output=True,
                          check=True).stdout.decode().removesuffix("\n")
    assert back == path


DOMAIN = """<domain type='qemu'>
  <name>vbox-p-web</name>
  <metadata><vbox:machine xmlns:vbox='https://vbox.dev/xmlns/machine/1' project='p' machine='web'/></metadata>
  <memory unit='KiB'>524288</memory>
  <vcpu placement='static'>1</vcpu>
  <os><type>hvm</type><cmdline>root=LABEL=vbox-root rw console=ttyS0</cmdline></os>
  <devices><disk type='volume' device='disk'/></devices>
</domain>"""


class _Box:
    def __init__(self, rootfs: Path):
        from types import SimpleNamespace

        self.name, self.version, self._rootfs = "debian-12", "12.0.8", rootfs
        self.meta = SimpleNamespace(features=["virtiofs", "static-addresses"])

    def artefact(self, kind):
        return self._rootfs


@pytest.fixture
def spec(tmp_path, monkeypatch):
    from tests.unit.test_templates import spec as machine_spec

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nvbox:x:1000:1000::/home/vbox:/bin/sh\n")
    shares = (Share(tmp_path / "src", "/vbox"), Share(tmp_path / "data", "/srv/my data", readonly=True))
    return replace(machine_spec(monkeypatch), box=_Box(tmp_path), folders=shares, folder_owner=(4242, 4242))


def test_apply_names_each_folder_and_shares_the_memory(spec, tmp_path):
    root = ET.fromstring(DOMAIN)
    virtiofs.apply(root, spec, tmp_path / "run")
    cmdline = root.find("os/cmdline").text
    assert cmdline == ("root=LABEL=vbox-root rw console=ttyS0 vbox.folder=vbox0,rw,vbox "
                       "vbox.folder=vbox1,ro,srv-my\\x20data")
    assert root.find("memoryBacking/source").get("type") == "memfd"
    assert root.find("memoryBacking/access").get("mode") == "shared"
    filesystems = root.findall("devices/filesystem")
    assert [(f.find("source").get("dir"), f.find("target").get("dir")) for f in filesystems] == \
        [(str(tmp_path / "run/vbox0"), "vbox0"), (str(tmp_path / "run/vbox1"), "vbox1")]
    assert all(f.find("binary").get("path") == str(virtiofs.VIRTIOFSD) for f in filesystems)
    # the project's own paths are in neither the XML nor the command line
    text = ET.tostring(root, encoding="unicode")
    assert str(tmp_path / "src") not in text and str(tmp_path / "data") not in text
    assert virtiofs.running_digest(text) == virtiofs.digest(spec) != ""


def test_apply_again_replaces_and_removes(spec, tmp_path):
    root = ET.fromstring(DOMAIN)
    virtiofs.apply(root, spec, tmp_path / "run")
    first = virtiofs.running_digest(ET.tostring(root, encoding="unicode"))
    moved = replace(spec, folders=(Share(tmp_path / "src", "/project"),))
    virtiofs.apply(root, moved, tmp_path / "run")
    assert root.find("os/cmdline").text.endswith("console=ttyS0 vbox.folder=vbox0,rw,project")
    assert len(root.findall("devices/filesystem")) == 1
    assert virtiofs.running_digest(ET.tostring(root, encoding="unicode")) not in (first, "")
    virtiofs.apply(root, replace(spec, folders=()), tmp_path / "run")
    assert root.find("os/cmdline").text == "root=LABEL=vbox-root rw console=ttyS0"
    assert root.find("memoryBacking") is None and root.findall("devices/filesystem") == []
    assert virtiofs.running_digest(ET.tostring(root, encoding="unicode")) == ""


def test_digest_follows_the_owner(spec):
    """The same folders under another owner are mapped otherwise: a restart changes them."""
    assert virtiofs.digest(spec) != virtiofs.digest(replace(spec, folder_owner=(1000, 1000)))


def test_kvm_extra_networks_in_the_domain(spec):
    """Each extra network is a bridge interface (an Open vSwitch port with its tag); a
    static address goes on the kernel command line; a later start replaces them all."""
    from providers.base import Attachment
    from providers.kvm_domain import apply_networks

    root = ET.fromstring(DOMAIN)
    nets = (Attachment("ovs", "vbox-ovs0", 42, "192.168.42.10/24", "52:54:01:aa:bb:cc"),
            Attachment("bridge", "br0", None, "", "52:54:01:dd:ee:ff"))
    apply_networks(root, replace(spec, networks=nets))
    interfaces = root.findall("devices/interface")
    assert [(i.find("source").get("bridge"), i.find("mac").get("address")) for i in interfaces] == \
        [("vbox-ovs0", "52:54:01:aa:bb:cc"), ("br0", "52:54:01:dd:ee:ff")]
    assert interfaces[0].find("virtualport").get("type") == "openvswitch"
    assert interfaces[0].find("vlan/tag").get("id") == "42"
    assert interfaces[1].find("virtualport") is None and interfaces[1].find("vlan") is None
    assert root.find("os/cmdline").text.endswith("console=ttyS0 vbox.net=52:54:01:aa:bb:cc,192.168.42.10/24")
    apply_networks(root, replace(spec, networks=nets[1:]))
    assert len(root.findall("devices/interface")) == 1
    assert "vbox.net=" not in root.find("os/cmdline").text


def test_lxc_extra_networks(spec, tmp_path, monkeypatch):
    """A Linux bridge is LXC's link; an Open vSwitch port is added with its tag by a script
    LXC runs at every start; networkd in the machine gets the static address."""
    from providers import ovs
    from providers.base import Attachment
    from providers.lxc_config import network_entries, network_files, render_config

    nets = (Attachment("ovs", "vbox-ovs0", 42, "192.168.42.10/24", "52:54:01:aa:bb:cc"),
            Attachment("bridge", "br0", None, "", "52:54:01:dd:ee:ff"))
    machine = replace(spec, networks=nets, folders=())
    text = render_config(machine, tmp_path / "m")
    assert "lxc.net.1.hwaddr = 52:54:01:aa:bb:cc" in text
    assert f"lxc.net.1.script.up = {tmp_path / 'm' / 'ovs-up-1'}" in text and "lxc.net.1.link" not in text
    assert "lxc.net.1.ipv4.address = 192.168.42.10/24 192.168.42.255" in text
    assert "lxc.net.2.link = br0" in text and "lxc.net.2.script.up" not in text
    veths = [entry["veth"] for entry in network_entries(machine, tmp_path)]
    assert len(set(veths)) == 2 and all(len(v) <= 15 for v in veths)
    assert 'add-port vbox-ovs0 "$5" tag=42' in ovs.port_script("vbox-ovs0", 42)
    files = network_files(machine)
    assert "Address=192.168.42.10/24" in files["etc/systemd/network/11-vbox-net1.network"][0]
    assert "DHCP=yes" in files["etc/systemd/network/11-vbox-net2.network"][0]
