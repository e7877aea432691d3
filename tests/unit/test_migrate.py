"""`env migrate` without a second host: what `--to` may name, the domain definition the
target gets, where a migrated machine is found afterwards, and the kvm-host box's
container. The moves themselves: tests/integration/test_migrate.py."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest

from providers import migration
from providers.remote import MIGRATED, machine_access
from tests.unit.test_xen import _Project
from vbox_cli.errors import UsageError
from vbox_cli.machines.migrate import target_uri


def _session(machines: dict):
    models = {name: SimpleNamespace(provider=provider) for name, provider in machines.items()}
    return SimpleNamespace(machines=models, loaded=SimpleNamespace(path=Path("/p/Envfile")))


def test_to_names_a_machine_of_the_envfile_or_a_uri_of_the_machines_kind():
    session = _session({"app": "kvm", "kvmhost": "lxc", "guest": "xen"})
    assert target_uri(session, "app", "kvmhost") == "qemu+ssh://kvmhost/system"
    assert target_uri(session, "guest", "kvmhost") == "xen+ssh://kvmhost/system"
    assert target_uri(session, "app", "qemu:///system") == "qemu:///system"
    assert target_uri(session, "app", "qemu+ssh://root@server/system?keyfile=k/id") == \
        "qemu+ssh://root@server/system?keyfile=k/id"
    for wrong, words in (("app", "cannot be moved onto itself"),
                         ("nowhere", "neither a machine of Envfile nor a libvirt URI"),
                         ("xen+ssh://server/system", "a KVM machine needs a qemu host"),
                         ("qemu+ssh://server/system?command=/bin/sh", "command")):
        with pytest.raises(UsageError) as raised:
            target_uri(session, "app", wrong)
        assert words in raised.value.message, raised.value.message


def test_a_migrated_machine_is_found_where_it_went_not_where_the_envfile_says(tmp_path):
    machines = {"app": {"provider": "kvm"}, "kvmhost": {"provider": "lxc"}}
    records = {"kvmhost": {"address": "10.100.3.5", "host_key": "ssh-ed25519 AAAA", "user": "vbox"}}
    assert machine_access(_Project(tmp_path, records), machines, "app") is None  # this host, as the Envfile says
    records["app"] = {MIGRATED: "qemu+ssh://kvmhost/system"}
    access = machine_access(_Project(tmp_path, records), machines, "app")
    assert access.machine == "kvmhost" and access.remote and access.ssh_host == "10.100.3.5"
    assert access.uri.startswith("qemu+libssh2://vbox@10.100.3.5:22/system?")
    # a record the project folder could have been given is checked as the Envfile's `host` is
    records["app"] = {MIGRATED: "qemu+ssh://server/system?command=/bin/sh"}
    from vbox_cli.errors import VboxError

    with pytest.raises(VboxError):
        machine_access(_Project(tmp_path, records), machines, "app")


def _domain(monkeypatch) -> str:
    from providers.kvm_domain import render_domain
    from tests.unit.test_templates import spec

    paths = {"kernel": "/here/box.vmlinuz", "initrd": "/here/box.initrd", "disk": "/here/box.qcow2"}
    return render_domain(spec(monkeypatch), "qemu", paths, "vbox-demo-abc123-web.qcow2",
                         "/here/vbox-demo-abc123-web.cred")


def test_the_target_gets_its_own_paths_and_a_file_disk_for_the_copy(monkeypatch):
    there = {"kernel": "/there/box.vmlinuz", "initrd": "/there/box.initrd", "disk": "/there/box.qcow2"}
    volumes = {"vbox-demo-abc123-web.cred": "/there/vbox-demo-abc123-web.cred"}
    persist = ET.fromstring(migration.target_xml(_domain(monkeypatch), there, volumes, ""))
    assert persist.findtext("os/kernel") == "/there/box.vmlinuz" and persist.findtext("os/initrd") == "/there/box.initrd"
    assert persist.find("sysinfo/entry").get("file") == "/there/vbox-demo-abc123-web.cred"
    assert persist.find("devices/serial/log") is None  # another host: no console log of this project's
    disk = persist.find("devices/disk/source")
    assert (disk.get("pool"), disk.get("volume")) == ("vbox", "vbox-demo-abc123-web.qcow2")
    # what libvirt copies into: the same volume as the file it is there
    live = ET.fromstring(migration.as_files(ET.tostring(persist, encoding="unicode"),
                                            {"vbox-demo-abc123-web.qcow2": "/there/vbox-demo-abc123-web.qcow2"}))
    disk = live.find("devices/disk")
    assert disk.get("type") == "file" and disk.find("source").attrib == {"file": "/there/vbox-demo-abc123-web.qcow2"}
    # the machine's own disk is found either way (a live change of its disk, a snapshot)
    for root in (persist, live):
        assert [d.find("target").get("dev") for d in migration.own_disks(root, "vbox-demo-abc123-web.qcow2")] == ["vda"]
    # back on this host: its console logged into the project again
    home = ET.fromstring(migration.target_xml(_domain(monkeypatch), there, volumes, "/p/.vbox/console/web.log"))
    assert home.find("devices/serial/log").get("file") == "/p/.vbox/console/web.log"


def test_a_libvirt_host_box_may_use_the_tun_device_and_no_other_box_may(monkeypatch):
    from dataclasses import replace

    from providers.lxc_config import render_config
    from tests.unit.test_templates import spec

    plain = spec(monkeypatch)
    assert "10:200" not in render_config(plain, Path("/c"))
    box = SimpleNamespace(name="kvm-host", version="12.0.1", meta=SimpleNamespace(features=["libvirt-host"]),
                          artefact=lambda kind: Path("/var/lib/vbox/boxes/kvm-host/12.0.1/rootfs"))
    text = render_config(replace(plain, box=box), Path("/c"))
    assert "lxc.cgroup.devices.allow = c 10:200 rwm" in text


def test_the_kvm_host_recipe_is_a_libvirt_host():
    from boxes.guestfiles import LIBVIRT_HOST_FILES
    from boxes.recipe import load

    recipe = load("kvm-host")
    assert recipe.libvirt_host and {"libvirt-daemon-system", "qemu-system-x86"} <= set(recipe.packages)
    assert "mknod -m 0666 /dev/net/tun c 10 200" in LIBVIRT_HOST_FILES["etc/systemd/system/vbox-tun.service"][0]
    assert not load("debian-12").libvirt_host


def test_a_xen_guest_moves_cold_with_its_disk_and_seed_at_the_target_paths(monkeypatch):
    from providers.base import Capability, supports
    from providers.remote import HostAccess
    from providers.xen import XenProvider, render_domain
    from tests.unit.test_templates import spec

    here = "/var/lib/vbox/images"
    source = render_domain(spec(monkeypatch), "pv", {"kernel": f"{here}/box.vmlinuz", "initrd": f"{here}/box.initrd"},
                           f"{here}/vbox-demo-abc123-web.qcow2", f"{here}/vbox-demo-abc123-web.seed")
    there = {"kernel": "/there/box.vmlinuz", "initrd": "/there/box.initrd", "disk": "/there/box.qcow2"}
    volumes = {"vbox-demo-abc123-web.qcow2": "/there/vbox-demo-abc123-web.qcow2",
               "vbox-demo-abc123-web.seed": "/there/vbox-demo-abc123-web.seed"}
    persist = ET.fromstring(migration.target_xml(source, there, volumes, ""))
    assert persist.findtext("os/kernel") == "/there/box.vmlinuz" and persist.findtext("os/initrd") == "/there/box.initrd"
    assert [d.get("file") for d in persist.findall("devices/disk/source")] == \
        ["/there/vbox-demo-abc123-web.qcow2", "/there/vbox-demo-abc123-web.seed"]
    # a file of another name is not the machine's: left as it is
    other = ET.fromstring(migration.target_xml(source, there, {}, ""))
    assert other.find("devices/disk/source").get("file") == f"{here}/vbox-demo-abc123-web.qcow2"
    guest = XenProvider(HostAccess(uri="xen+libssh2://vbox@10.1.2.3:22/system", shown="xen+ssh://h/system",
                                   machine="h", ssh_host="10.1.2.3"))
    assert supports(guest, Capability.MIGRATE)
    assert "memory only" in guest.moves_cold  # `env migrate` says why it moves cold


def test_an_lxc_machine_moves_to_a_libvirt_lxc_host_and_is_run_there_by_libvirt(tmp_path):
    from providers import registry
    from providers.lxc import LxcProvider
    from providers.lxc_guest import LxcGuestProvider

    session = _session({"app": "lxc", "kvmhost": "kvm"})
    assert target_uri(session, "app", "kvmhost") == "lxc+ssh://kvmhost/system"
    assert target_uri(session, "app", "lxc:///system") == "lxc:///system"
    with pytest.raises(UsageError, match="an LXC container needs an lxc host"):
        target_uri(session, "app", "qemu+ssh://server/system")
    machines = {"app": {"provider": "lxc"}, "kvmhost": {"provider": "kvm"}}
    records = {"kvmhost": {"address": "10.100.3.5", "host_key": "ssh-ed25519 AAAA", "user": "vbox"}}
    assert machine_access(_Project(tmp_path, records), machines, "app") is None
    records["app"] = {MIGRATED: "lxc+ssh://kvmhost/system"}
    access = machine_access(_Project(tmp_path, records), machines, "app")
    assert access.machine == "kvmhost" and access.ssh_host == "10.100.3.5"
    assert access.uri.startswith("lxc+libssh2://vbox@10.100.3.5:22/system?")
    assert isinstance(registry.get("lxc", access), LxcGuestProvider)  # libvirt runs it there
    assert type(registry.get("lxc")) is LxcProvider
    records["app"] = {MIGRATED: "lxc:///system"}  # back here: this host's own LXC
    assert machine_access(_Project(tmp_path, records), machines, "app") is None
    from vbox_cli.errors import VboxError

    records["app"] = {MIGRATED: "qemu+ssh://server/system"}  # a record .vbox/ was given: not an LXC host
    with pytest.raises(VboxError, match="not an lxc host"):
        machine_access(_Project(tmp_path, records), machines, "app")


def test_a_moved_container_can_only_be_started_stopped_moved_and_removed():
    from providers.base import Capability, supports
    from providers.lxc_guest import LxcGuestProvider
    from providers.remote import HostAccess

    guest = LxcGuestProvider(HostAccess(uri="lxc+libssh2://vbox@10.1.2.3:22/system", shown="lxc+ssh://h/system",
                                        machine="h", ssh_host="10.1.2.3"))
    for capability in (Capability.PORTS, Capability.FOLDERS, Capability.NETWORKS, Capability.SNAPSHOTS,
                       Capability.LIVE, Capability.SUSPEND):
        assert "another host's libvirt LXC driver" in guest.unsupported(capability)
    for capability in (Capability.MIGRATE, Capability.RESOURCES, Capability.PREFLIGHT):
        assert supports(guest, capability)
    assert "checkpoint" in guest.moves_cold


def test_a_forward_through_a_host_machine_is_its_own_rules_there_and_nothing_else():
    from providers.ports import Forward, through_host_script

    script = through_host_script("mig-abc123", "app", "10.1.2.3", "10.9.8.7", [Forward("tcp", "127.0.0.1", 8080, 80)])
    assert "-I PREROUTING -d 10.1.2.3/32 -p tcp --dport 8080 -m comment --comment \"$c\" -j DNAT " \
           "--to-destination 10.9.8.7:80" in script
    assert "-I FORWARD -d 10.9.8.7/32 -p tcp --dport 80 -m conntrack --ctstate DNAT" in script
    assert script.startswith("set -e\nc=vbox:mig-abc123:app\n")  # its old rules (that comment only) go first
    assert "PREROUTING" not in through_host_script("mig-abc123", "app", "10.1.2.3", "10.1.2.3", [])
    for address in ("10.1.2.3; reboot", "host.example", "::1"):
        with pytest.raises(ValueError):
            through_host_script("mig-abc123", "app", address, "10.9.8.7", [])


def test_a_guest_of_a_host_machine_may_forward_ports_and_one_of_another_host_may_not(tmp_path):
    from providers.base import Capability
    from providers.kvm import KvmProvider
    from providers.remote import HostAccess

    machine_host = HostAccess(uri="qemu+libssh2://vbox@10.1.2.3:22/system", shown="qemu+ssh://kvmhost/system",
                              machine="kvmhost", ssh_host="10.1.2.3", ssh_user="vbox")
    other = HostAccess(uri="qemu+ssh://root@server/system", shown="qemu+ssh://root@server/system",
                       ssh_host="server", ssh_user="root")
    assert KvmProvider(machine_host).unsupported(Capability.PORTS) is None
    assert "where its network is" in KvmProvider(other).unsupported(Capability.PORTS)
