"""Rendered LXC configs and network XML against golden files; the XML also defined on
libvirt's test driver. VBOX_REGENERATE_GOLDEN=1 rewrites the golden files."""

from __future__ import annotations

import ipaddress
import os
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import libvirt
import pytest

from boxes.store import Box
from providers.base import MachineSpec
from providers.lxc_config import cpuset, guest_files, mac_address, masked_units, render_config, veth_name
from providers.network import NetworkPlan, bridge_name, choose_subnet, network_name
from vbox_cli.envfile.load import parse

GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("VBOX_REGENERATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs; VBOX_REGENERATE_GOLDEN=1 rewrites it"


def spec(monkeypatch, cpus: int = 2, memory: str = "768M") -> MachineSpec:
    monkeypatch.setattr("providers.lxc_config.cgroup_keys", lambda: ("cgroup.memory.limit_in_bytes", "cgroup.cpuset.cpus"))
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    envfile = parse(f'[machines.web]\ncpus = {cpus}\nmemory = "{memory}"\nhostname = "web.dev.test"\n'.encode(),
                    "Envfile", None)
    box = Box("debian-12", "12.0.1", Path("/var/lib/vbox/boxes/debian-12/12.0.1"), {"digest": "sha256:0", "user": "vbox"})
    return MachineSpec(project_id="demo-abc123", object_name="vbox-demo-abc123-web",
                       machine=envfile.machines_resolved()["web"], box=box, address="10.101.7.2",
                       gateway="10.101.7.1", network="vbox-demo-abc123", bridge="vbx-1234abcd",
                       domain="demo-abc123.vbox", user="vbox", authorized_key="ssh-ed25519 AAAA project",
                       host_key_private="PRIVATE", host_key_public="ssh-ed25519 BBBB host", index=1,
                       console_log=Path("/p/.vbox/console/web.log"))


def test_lxc_config(monkeypatch):
    text = render_config(spec(monkeypatch), Path("/var/lib/vbox/lxc/vbox-demo-abc123-web"))
    check_golden("lxc-web.conf", text)
    assert "lxc.cgroup.memory.limit_in_bytes = 805306368" in text
    assert "lxc.cgroup.cpuset.cpus = 2,3" in text


def test_kvm_credential_writes_the_same_identity_as_lxc(monkeypatch):
    import base64

    from providers.guest import tmpfiles_lines

    machine_spec = spec(monkeypatch)
    lines = tmpfiles_lines(machine_spec).splitlines()
    written = {line.split()[1]: base64.b64decode(line.split()[-1]).decode() for line in lines if line.startswith("f+~")}
    lxc = guest_files(machine_spec)
    for path, content in written.items():
        assert lxc[path.lstrip("/")][0] == content
    assert "/etc/ssh/ssh_host_ed25519_key" in written and "/home/vbox/.ssh/authorized_keys" in written


def test_guest_files_carry_keys_address_and_names(monkeypatch):
    files = guest_files(spec(monkeypatch))
    assert files["etc/ssh/ssh_host_ed25519_key"] == ("PRIVATE", 0o600, "root")
    assert files["home/vbox/.ssh/authorized_keys"] == ("ssh-ed25519 AAAA project\n", 0o600, "vbox")
    assert files["etc/hostname"][0] == "web\n"
    assert "127.0.1.1\tweb.dev.test web" in files["etc/hosts"][0]
    assert "Address=10.101.7.2/24" in files["etc/systemd/network/10-vbox.network"][0]
    # a box vbox did not build keeps its resolver; one it built gets the project network's
    # DNS, without systemd-resolved
    assert "etc/resolv.conf" not in files and masked_units(spec(monkeypatch)) == ()
    plain = spec(monkeypatch)
    built = replace(plain, box=replace(plain.box, meta=replace(plain.box.meta, recipe="debian-12")))
    assert guest_files(built)["etc/resolv.conf"][0].endswith("nameserver 10.101.7.1\nsearch demo-abc123.vbox\n")
    # networkd neither, as LXC sets the addresses; unless a network asks DHCP
    assert masked_units(built) == ("systemd-resolved.service", "systemd-networkd.service", "systemd-networkd.socket",
                                   "systemd-networkd-wait-online.service")
    dhcp = replace(built, networks=[SimpleNamespace(address="")])
    assert masked_units(dhcp) == ("systemd-resolved.service",)
    assert masked_units(replace(built, networks=[SimpleNamespace(address="192.168.42.10/24")])) == \
        masked_units(built)


def test_names_fit_linux_interface_names():
    assert len(veth_name("vbox-" + "x" * 60)) <= 15
    assert len(bridge_name("a-very-long-project-name-abcdef")) <= 15
    assert mac_address("vbox-p-web").startswith("00:16:3e:")
    assert mac_address("vbox-p-web") == mac_address("vbox-p-web") != mac_address("vbox-p-db")


def test_cpusets_spread_machines_over_the_host():
    assert [cpuset(1, i, 2) for i in range(4)] == ["0", "1", "0", "1"]
    assert cpuset(2, 1, 4) == "2,3"
    assert cpuset(8, 0, 2) == "0,1"


def test_network_xml_defines_on_the_test_driver():
    plan = NetworkPlan(network_name("demo-abc123"), bridge_name("demo-abc123"), "10.101.7.0/24", "demo-abc123.vbox")
    xml = plan.xml({"web": "10.101.7.2", "db": "10.101.7.3"})
    check_golden("network.xml", xml)
    root = ET.fromstring(xml)
    assert root.find("bridge").get("stp") == "off" and root.find("bridge").get("delay") == "0"
    conn = libvirt.open("test:///default")
    try:
        net = conn.networkDefineXML(xml)
        net.create()
        defined = ET.fromstring(net.XMLDesc())
        assert {h.find("hostname").text: h.get("ip") for h in defined.findall("dns/host")} == \
            {"web": "10.101.7.2", "db": "10.101.7.3"}
        assert defined.find("forward").get("mode") == "nat"
        net.destroy()
        net.undefine()
    finally:
        conn.close()


def test_subnet_choice_avoids_used_networks():
    used = [ipaddress.ip_network("10.0.0.0/8")]
    with pytest.raises(Exception, match="no free /24"):
        choose_subnet("p", used)
    first = choose_subnet("p", [])
    assert choose_subnet("p", []) == first  # stable
    second = choose_subnet("p", [ipaddress.ip_network(first)])
    assert second != first and ipaddress.ip_network(second).subnet_of(ipaddress.ip_network("10.100.0.0/14"))


def test_domain_xml_defines_on_the_test_driver(monkeypatch):
    import base64

    from providers.kvm_domain import render_domain
    from providers.libvirt_domain import mac_address

    machine_spec = spec(monkeypatch)
    paths = {"kernel": "/var/lib/vbox/images/box.vmlinuz", "initrd": "/var/lib/vbox/images/box.initrd"}
    cred = "/var/lib/vbox/images/vbox-demo-abc123-web.cred"
    xml = render_domain(machine_spec, "qemu", paths, "vbox-demo-abc123-web.qcow2", cred)
    check_golden("domain-web.xml", xml)
    root = ET.fromstring(xml)
    assert root.get("type") == "qemu" and root.find("cpu") is None
    assert root.findtext("memory") == str(768 * 1024) and root.findtext("vcpu") == "2"
    assert "systemd.hostname=web" in root.findtext("os/cmdline")
    # the identity (the host's private key among it) is a file QEMU reads: only its path is here
    entry = root.find("sysinfo[@type='fwcfg']/entry")
    assert (entry.get("name"), entry.get("file")) == ("opt/io.systemd.credentials/tmpfiles.extra", cred)
    assert "PRIVATE" not in xml and base64.b64encode(b"PRIVATE").decode() not in xml
    assert root.find("devices/interface/mac").get("address") == mac_address("vbox-demo-abc123-web")
    kvm = ET.fromstring(render_domain(machine_spec, "kvm", paths, "v.qcow2", cred))
    assert kvm.get("type") == "kvm" and kvm.find("cpu").get("mode") == "host-passthrough"
    # on a host of 1 GiB and 8 CPUs: memory may grow live to twice (at most the host's), vCPUs to the host's
    grown = ET.fromstring(render_domain(machine_spec, "qemu", paths, "v.qcow2", cred, host=(1024**3, 8)))
    assert (grown.findtext("memory"), grown.findtext("currentMemory")) == (str(1024**2), str(768 * 1024))
    assert (grown.findtext("vcpu"), grown.find("vcpu").get("current")) == ("8", "2")
    assert grown.find("devices/memballoon").get("model") == "virtio"
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXML(xml)
        defined = ET.fromstring(dom.XMLDesc(0))
        assert defined.findtext("os/kernel") == paths["kernel"]
        assert defined.find("devices/serial/log").get("file") == "/p/.vbox/console/web.log"
        dom.undefine()
    finally:
        conn.close()


def test_resources_set_before_a_start_give_a_machine_of_an_earlier_vbox_its_balloon(monkeypatch):
    """`set_resources` rewrites memory, vCPUs and the balloon of a defined domain: one made
    before vbox had live changes (no maximum, no balloon) gets them at its next start."""
    from providers.kvm_domain import render_domain, set_resources

    machine_spec = spec(monkeypatch)
    paths = {"kernel": "/k", "initrd": "/i"}
    old = ET.fromstring(render_domain(machine_spec, "qemu", paths, "v.qcow2", "/c"))
    devices = old.find("devices")
    for balloon in devices.findall("memballoon"):
        devices.remove(balloon)
    old.remove(old.find("currentMemory"))
    set_resources(old, spec(monkeypatch, cpus=1, memory="512M"), (1024**3, 4))
    assert (old.findtext("memory"), old.findtext("currentMemory")) == (str(1024**2), str(512 * 1024))
    assert (old.findtext("vcpu"), old.find("vcpu").get("current")) == ("4", "1")
    assert [b.get("model") for b in old.findall("devices/memballoon")] == ["virtio"]
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXML(ET.tostring(old, encoding="unicode"))
        assert dom.maxMemory() == 1024**2 and dom.vcpusFlags(libvirt.VIR_DOMAIN_VCPU_MAXIMUM) == 4
        dom.undefine()
    finally:
        conn.close()


def test_volume_xml(tmp_path):
    from providers.storage import overlay_xml

    xml = overlay_xml("vbox-demo-abc123-web.qcow2", "/var/lib/vbox/images/box-debian-12.qcow2", 10 * 1024**3)
    check_golden("volume-web.xml", xml)
    conn = libvirt.open("test:///default")
    try:
        pool = conn.storagePoolLookupByName("default-pool")
        vol = pool.createXML(xml.replace("/var/lib/vbox/images/box-debian-12.qcow2",
                                         "/default-pool/base.qcow2"), 0)
        assert vol.info()[1] == 10 * 1024**3
        vol.delete(0)
    finally:
        conn.close()


def test_domain_xml_of_a_xen_host_box(monkeypatch):
    """A box carrying Xen boots it as a multiboot kernel, the dom0 kernel and initrd as modules."""
    from providers.kvm_domain import render_domain

    machine_spec = spec(monkeypatch)
    paths = {"kernel": "/i/box.vmlinuz", "initrd": "/i/box.initrd", "hypervisor": "/i/box.xen"}
    xml = render_domain(machine_spec, "qemu", paths, "v.qcow2", "/i/v.cred")
    check_golden("domain-xen-host.xml", xml)
    root = ET.fromstring(xml)
    assert root.findtext("os/kernel") == "/i/box.xen" and root.find("os/initrd") is None
    assert root.findtext("os/cmdline").startswith("dom0_mem=384M,max:384M console=com1")
    qemu = "{http://libvirt.org/schemas/domain/qemu/1.0}"
    args = [a.get("value") for a in root.iter(f"{qemu}arg")]
    assert args[0] == "-initrd"
    dom0, initrd = args[1].split(",")
    assert dom0.startswith("/i/box.vmlinuz root=LABEL=vbox-root") and "console=hvc0" in dom0
    assert initrd == "/i/box.initrd"
    assert root.find("cpu") is None  # QEMU's own -cpu: libvirt would drop the vendor
    assert args[args.index("-cpu") + 1] == "qemu64,vendor=GenuineIntel,svm=on"


def test_every_recipe_loads():
    from boxes import recipe

    loaded = {name: recipe.load(name) for name in recipe.available()}
    assert {"debian-12", "xen-host"} <= set(loaded)
    assert loaded["xen-host"].hypervisor and not loaded["debian-12"].hypervisor
    assert "linux-image-amd64" in loaded["xen-host"].packages  # the cloud kernel cannot be dom0


def test_a_late_second_definition_of_a_machine_is_the_same_domain(monkeypatch):
    """An `env up` killed while libvirtd carries out its defineXML: the next `up` defines the
    same machine again, and must not fail with "already exists with uuid" (issue 20)."""
    from providers.kvm_domain import render_domain
    from providers.libvirt_domain import domain_uuid

    assert domain_uuid("vbox-a-web") == domain_uuid("vbox-a-web") != domain_uuid("vbox-b-web")
    paths = {"kernel": "/k", "initrd": "/i"}
    xml = render_domain(spec(monkeypatch), "qemu", paths, "v.qcow2", "/c").replace("<domain type='qemu'>",
                                                                                  "<domain type='test'>")
    conn = libvirt.open("test:///default")
    try:
        first = conn.defineXML(xml)   # the killed up's definition, carried out late
        second = conn.defineXML(xml)  # the next up's own
        assert first.UUIDString() == second.UUIDString() == domain_uuid("vbox-demo-abc123-web")
        second.undefine()
    finally:
        conn.close()


def test_synced_folders_are_mount_entries_escaped_and_idmapped(monkeypatch, tmp_path):
    from dataclasses import replace

    from providers.base import Share
    from providers.idmap import maps
    from providers.idmap import folder_maps
    from providers.lxc_config import mount_entries

    rootfs = tmp_path / "box" / "rootfs" / "etc"
    rootfs.mkdir(parents=True)
    (rootfs / "passwd").write_text("root:x:0:0::/root:/bin/sh\nvbox:x:1000:1000::/home/vbox:/bin/bash\n")
    from boxes.store import Box

    box = Box("debian-12", "1", tmp_path / "box", {"digest": "sha256:0"})
    shares = (Share(Path("/home/me/my project"), "/vbox"), Share(Path("/home/me/my project/data\nx"), "/srv/data", True))
    machine_spec = replace(spec(monkeypatch), box=box, folders=shares, folder_owner=(0, 0))
    assert folder_maps(machine_spec) == ("0 1000 1\n65534 0 1\n", "0 1000 1\n65534 0 1\n")
    entries = mount_entries(machine_spec, Path("/var/lib/vbox/lxc/x"), idmapped=True)
    assert entries == [
        "/home/me/my\\040project vbox none bind,create=dir,idmap=/var/lib/vbox/lxc/x/idmap 0 0",
        "/home/me/my\\040project/data\\012x srv/data none bind,create=dir,ro,idmap=/var/lib/vbox/lxc/x/idmap 0 0",
    ]
    assert all("\n" not in entry for entry in entries)
    assert folder_maps(replace(machine_spec, folder_owner=(1000, 1000))) == ("", "")  # the same ids: a plain bind
    assert maps(1001, 1000) == "1001 1000 1\n0 0 1\n"


def test_a_box_without_a_kernel_boots_its_disk_and_a_cloud_image_gets_its_seed(monkeypatch):
    """No <kernel> (the disk's own bootloader), and the NoCloud seed as a read-only second
    disk whose files carry the identity as JSON: a hostile value cannot add a key."""
    import io
    import json
    import xml.etree.ElementTree as ET

    import pycdlib

    from providers.cloudinit import seed_files, seed_image
    from providers.kvm_domain import render_domain

    machine_spec = spec(monkeypatch)
    root = ET.fromstring(render_domain(machine_spec, "qemu", {"disk": "/i/d.qcow2"}, "v.qcow2", "/i/v.cred",
                                       seed="v.seed"))
    assert root.find("os/kernel") is None and root.find("os/cmdline") is None
    assert root.find("os/boot").get("dev") == "hd"
    seed = [d for d in root.findall("devices/disk") if d.find("source").get("volume") == "v.seed"][0]
    assert seed.find("readonly") is not None and seed.find("target").get("dev") == "vdb"
    hostile = replace(machine_spec, authorized_key="ssh-ed25519 AAAA x\nruncmd: [[touch, /pwned]]\n")
    files = seed_files(hostile, "52:54:00:01:02:03")
    user = json.loads(files["user-data"].removeprefix("#cloud-config\n"))
    assert set(user) == {"hostname", "fqdn", "users", "ssh_deletekeys", "ssh_genkeytypes", "ssh_keys", "ssh_pwauth",
                         "disable_root"}
    assert user["users"][0]["ssh_authorized_keys"] == [hostile.authorized_key]
    assert json.loads(files["network-config"])["ethernets"]["eth0"]["match"] == {"macaddress": "52:54:00:01:02:03"}
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(seed_image(machine_spec, "52:54:00:01:02:03")))
    try:
        assert iso.pvd.volume_identifier.strip() == b"cidata"
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, rr_path="/meta-data")
        assert json.loads(out.getvalue()) == {"instance-id": "vbox-demo-abc123-web", "local-hostname": "web"}
    finally:
        iso.close()


def test_vms_of_a_box_with_a_static_resolver_skip_resolved_and_name_the_network_dns(monkeypatch):
    import base64

    from providers.guest import RESOLV_CONF, RESOLVER_WORD, resolver_command, tmpfiles_lines
    from providers.kvm_domain import render_domain
    from providers.xen import kernel_cmdline

    plain = spec(monkeypatch)
    paths = {"kernel": "/k", "initrd": "/i"}
    featured = replace(plain, box=replace(plain.box, meta=replace(plain.box.meta, features=["static-resolver"])))
    # without the box's feature (an older box, a box vbox did not build): resolved as before
    assert RESOLVER_WORD not in render_domain(plain, "qemu", paths, "v.qcow2", "/c")
    assert RESOLV_CONF not in tmpfiles_lines(plain) and RESOLVER_WORD not in kernel_cmdline(plain, "pv")
    cmdline = ET.fromstring(render_domain(featured, "qemu", paths, "v.qcow2", "/c")).findtext("os/cmdline")
    assert RESOLVER_WORD in cmdline.split() and RESOLVER_WORD in kernel_cmdline(featured, "pv").split()
    lines = tmpfiles_lines(featured).splitlines()
    assert f"L+ /etc/resolv.conf - - - - {RESOLV_CONF}" in lines
    written = next(line for line in lines if line.startswith(f"f+~ {RESOLV_CONF} "))
    assert base64.b64decode(written.split()[-1]).decode().endswith("nameserver 10.101.7.1\nsearch demo-abc123.vbox\n")
    # no project network (a user's libvirt session: QEMU's own DNS): resolved as before
    alone = replace(featured, network="", gateway="")
    assert RESOLV_CONF not in tmpfiles_lines(alone) and RESOLVER_WORD not in kernel_cmdline(alone, "pv")
    # a live move says the new network's DNS, quoted for the shell
    odd = replace(featured, domain="x'; reboot; '")
    assert resolver_command(odd).startswith("printf %s '") and "'\"'\"'" in resolver_command(odd)


def test_a_moved_vm_keeps_its_identity_and_gets_its_new_network_s_resolver(monkeypatch):
    import base64

    from providers.guest import tmpfiles_lines
    from providers.kvm import KvmProvider
    from providers.xen import XenProvider, seed_image

    plain = spec(monkeypatch)
    here = replace(plain, box=replace(plain.box, meta=replace(plain.box.meta, features=["static-resolver"])))
    # a move's spec carries no private host key: vbox keeps none (the credential has it)
    there = replace(here, gateway="10.77.0.1", network="vbox-demo-abc123", host_key_private="")
    kvm, xen = KvmProvider.__new__(KvmProvider), XenProvider.__new__(XenProvider)
    credential = kvm.identity_volume(".cred", tmpfiles_lines(here).encode(), there).decode()
    lines = credential.splitlines()
    key = next(line for line in lines if line.startswith("f+~ /etc/ssh/ssh_host_ed25519_key "))
    assert base64.b64decode(key.split()[-1]) == b"PRIVATE"  # as it was written at its creation
    resolvers = [line for line in lines if line.startswith("f+~ /run/vbox/resolv.conf ")]
    assert len(resolvers) == 1 and "nameserver 10.77.0.1\n" in base64.b64decode(resolvers[0].split()[-1]).decode()
    assert lines.count("L+ /etc/resolv.conf - - - - /run/vbox/resolv.conf") == 1
    assert kvm.identity_volume(".seed", b"#cloud-config", there) is None  # a cloud image's seed: copied as it is
    seed = xen.identity_volume(".seed", seed_image(here), there)
    assert len(seed) % 4096 == 0 and seed.rstrip(b"\0").decode().splitlines()[0] == \
        seed_image(here).decode().splitlines()[0]
    assert seed.rstrip(b"\0").decode().partition("\n")[2] == credential
