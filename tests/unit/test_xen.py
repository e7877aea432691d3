"""Xen guests: the domain XML of each mode (golden files, libvirt's own schema, the test
driver), the seed disk, and how a machine's `host` is reached."""

from __future__ import annotations

import base64
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from providers.remote import resolve
from providers.xen import SEED_HEADER, render_domain, seed_image
from tests.unit.test_templates import check_golden, spec

PATHS = {"kernel": "/var/lib/vbox/images/box.vmlinuz", "initrd": "/var/lib/vbox/images/box.initrd"}
DISK, SEED = "/var/lib/vbox/images/vbox-demo-abc123-web.qcow2", "/var/lib/vbox/images/vbox-demo-abc123-web.seed"


@pytest.mark.parametrize("mode", ["pv", "pvh", "hvm"])
def test_domain_xml_of_each_mode(monkeypatch, tmp_path, mode):
    xml = render_domain(spec(monkeypatch), mode, PATHS, DISK, SEED)
    check_golden(f"xen-{mode}.xml", xml)
    root = ET.fromstring(xml)
    assert root.get("type") == "xen"
    os_type = root.find("os/type")
    assert (os_type.get("machine"), os_type.text) == {"pv": ("xenpv", "linux"), "pvh": ("xenpvh", "xenpvh"),
                                                      "hvm": ("xenfv", "hvm")}[mode]
    assert root.findtext("os/kernel") == PATHS["kernel"] and root.findtext("os/initrd") == PATHS["initrd"]
    cmdline = root.findtext("os/cmdline")
    assert "systemd.hostname=web" in cmdline
    assert ("console=ttyS0" if mode == "hvm" else "console=hvc0") in cmdline
    disks = root.findall("devices/disk")
    assert [(d.find("source").get("file"), d.find("target").get("dev"), d.find("target").get("bus")) for d in disks] \
        == [(DISK, "xvda", "xen"), (SEED, "xvdb", "xen")]
    assert disks[1].find("readonly") is None  # QEMU's qdisk refuses a read-only raw disk
    # PVH and HVM hide rdtscp (Xen under emulation cannot emulate it); PV has no CPUID policy here
    hidden = [f.get("name") for f in root.findall("cpu/feature") if f.get("policy") == "disable"]
    assert hidden == ([] if mode == "pv" else ["rdtscp"])
    # libvirt's own schema
    path = tmp_path / "domain.xml"
    path.write_text(xml)
    assert shutil.which("virt-xml-validate") and shutil.which("xmllint"), "scripts/setup.sh dev installs them"
    result = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_domain_xml_defines_on_the_test_driver(monkeypatch):
    """The test driver knows no Xen: it parses and keeps the same XML as a test domain."""
    xml = render_domain(spec(monkeypatch), "pvh", PATHS, DISK, SEED).replace("<domain type='xen'>",
                                                                              "<domain type='test'>")
    xml = xml.replace("machine='xenpvh'>xenpvh", "machine='pc'>hvm")
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXML(xml)
        defined = ET.fromstring(dom.XMLDesc(0))
        assert [d.find("source").get("file") for d in defined.findall("devices/disk")] == [DISK, SEED]
        assert defined.find("devices/interface/mac") is not None
        dom.undefine()
    finally:
        conn.close()


def test_an_unknown_mode_is_refused(monkeypatch):
    with pytest.raises(Exception, match="not one of pv, pvh, hvm"):
        render_domain(spec(monkeypatch), "hvm2", PATHS, DISK, SEED)


def test_seed_disk_holds_the_identity_the_kvm_credential_holds(monkeypatch):
    from providers.guest import tmpfiles_lines

    machine_spec = spec(monkeypatch)
    image = seed_image(machine_spec)
    assert len(image) % 4096 == 0
    assert image.startswith(SEED_HEADER.encode())  # what the box's seed script looks for
    text = image.rstrip(b"\0").decode()
    lines = text.splitlines()
    assert lines[0].startswith("# vbox-seed 1:")
    assert "\n".join(lines[1:]) + "\n" == tmpfiles_lines(machine_spec)
    key_line = next(line for line in lines if " /etc/ssh/ssh_host_ed25519_key " in line)
    assert base64.b64decode(key_line.split()[-1]) == b"PRIVATE"


class _Project:
    def __init__(self, tmp: Path, records: dict):
        self.client_key, self.known_hosts, self._records = tmp / "id_ed25519", tmp / "known_hosts", records
        self.folder = tmp

    def machine_state(self, name: str) -> dict:
        return self._records.get(name, {})


def test_a_host_that_is_a_machine_of_the_envfile(tmp_path):
    machines = {"xenhost": object(), "web": object()}
    project = _Project(tmp_path, {"xenhost": {"address": "10.100.3.5", "host_key": "ssh-ed25519 AAAA", "user": "vbox"}})
    access = resolve("xen+ssh://xenhost/system", "xen:///system", project, machines)
    assert access.machine == "xenhost" and not access.pending and access.remote
    assert access.uri.startswith("xen+libssh2://vbox@10.100.3.5:22/system?")
    assert f"keyfile={tmp_path}/id_ed25519" in access.uri and f"known_hosts={tmp_path}/known_hosts" in access.uri
    assert "sshauth=privkey" in access.uri  # the project's key only
    assert (access.ssh_host, access.ssh_port, access.ssh_user) == ("10.100.3.5", 22, "vbox")
    # not up yet: known to be pending, not guessed
    pending = resolve("xen+ssh://xenhost/system", "xen:///system", _Project(tmp_path, {}), machines)
    assert pending.pending and pending.machine == "xenhost"


def test_other_hosts_are_used_as_written(tmp_path):
    project = _Project(tmp_path, {})
    assert resolve(None, "xen:///system", project, {}).uri == "xen:///system"
    assert not resolve("xen:///system", "xen:///system", project, {}).remote
    other = resolve("xen+ssh://root@server.example:2222/system", "xen:///system", project, {})
    assert other.uri == "xen+ssh://root@server.example:2222/system"
    assert (other.ssh_host, other.ssh_port, other.ssh_user, other.machine) == ("server.example", 2222, "root", None)
    assert other.key_file is None and other.known_hosts is None  # the user's own SSH setup
    # a URI that names a key and a known_hosts file of the project: vbox's own SSH through
    # the host uses them too, and libvirt gets their absolute paths
    named = resolve("qemu+libssh2://root@server.example/system?keyfile=k/id&known_hosts=k/kh&sshauth=privkey",
                    "xen:///system", project, {})
    assert (named.key_file, named.known_hosts, named.ssh_port) == (f"{tmp_path}/k/id", f"{tmp_path}/k/kh", 22)
    assert named.shown == "qemu+libssh2://root@server.example/system"  # messages leave the query out
    assert named.uri == (f"qemu+libssh2://root@server.example/system?keyfile={tmp_path}/k/id"
                         f"&known_hosts={tmp_path}/k/kh&sshauth=privkey")


@pytest.mark.parametrize("query", [
    "command=./pwn.sh", "socket=/tmp/s", "netcat=./nc", "pkipath=/etc", "no_verify=1", "known_hosts_verify=auto",
    "keyfile=/root/.ssh/id_ed25519", "known_hosts=~/.ssh/known_hosts", "keyfile=a&keyfile=b", "sshauth=privkey;id",
    "mode=auto%0Acommand=x", "name=qemu:///system",
])
def test_host_uri_parameters_outside_the_allow_list_are_refused(tmp_path, query):
    """libvirt's `command` runs a local program: an Envfile must never reach it (nor any
    other parameter that names a program or a file outside the project)."""
    from vbox_cli.envfile.load import parse
    from vbox_cli.errors import EnvfileError

    text = f'[machines.vm]\nprovider = "kvm"\nhost = "qemu+ssh://x/system?{query}"\n'
    with pytest.raises(EnvfileError) as info:
        parse(text.encode(), "Envfile", tmp_path)
    assert [p.path for p in info.value.problems] == ["machines.vm.host"] and info.value.problems[0].line == 3


def test_host_uri_files_must_resolve_inside_the_project(tmp_path):
    from vbox_cli.envfile.load import parse
    from vbox_cli.errors import EnvfileError

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "key").write_text("secret")
    project = tmp_path / "project"
    project.mkdir()
    (project / "keys").symlink_to(outside)
    text = '[machines.vm]\nprovider = "kvm"\nhost = "qemu+libssh2://x/system?keyfile=keys/key"\n'
    with pytest.raises(EnvfileError) as info:
        parse(text.encode(), "Envfile", project)
    assert "leads outside the project folder" in str(info.value)
    (project / "keys").unlink()
    (project / "keys").mkdir()
    (project / "keys" / "key").write_text("a key of the project")
    assert parse(text.encode(), "Envfile", project).machines["vm"].host.endswith("keyfile=keys/key")
