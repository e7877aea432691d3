"""Extra networks for real: Open vSwitch bridges with VLAN tags (LXC and KVM machines on
one bridge), a Linux bridge of the host with its own DHCP server, and what destroy
leaves: no port, and no bridge that vbox made (one it did not make stays)."""

from __future__ import annotations

import os
import secrets
import subprocess
import time

import pytest

from providers import ovs
from providers.leaks import find as find_leaks
from tests.integration.test_lxc import Project


def _ping(project: Project, machine: str, address: str) -> bool:
    result = project.env("ssh", machine, "--", f"ping -c1 -W2 {address}", check_rc=None)
    return result.returncode == 0


@pytest.fixture
def bridge_name():
    name = f"vbox-t{secrets.token_hex(3)}"  # vbox makes it: "vbox-..."
    yield name
    subprocess.run(["ovs-vsctl", "--if-exists", "del-br", name], check=False)


def test_ovs_vlans(debian12, tmp_path, bridge_name):
    assert ovs.unavailable() is None, "Open vSwitch is not running: `bash scripts/test.sh` sets it up"
    theirs = f"vbxt{secrets.token_hex(3)}"  # a bridge vbox did not make: it must stay
    subprocess.run(["ovs-vsctl", "add-br", theirs, "--", "set", "bridge", theirs, "datapath_type=netdev"], check=True)
    project = Project(tmp_path / "vlans")
    project.folder.mkdir(parents=True)
    project.write(f"""
[defaults]
folders = []
[machines.a]
networks = [{{ ovs = "{bridge_name}", vlan = 42, address = "192.168.42.11/24" }}, {{ ovs = "{theirs}" }}]
[machines.b]
networks = [{{ ovs = "{bridge_name}", vlan = 42, address = "192.168.42.12/24" }}]
[machines.c]
networks = [{{ ovs = "{bridge_name}", vlan = 43, address = "192.168.42.13/24" }}]
""")
    try:
        said = project.env("up")
        assert f"made the Open vSwitch bridge {bridge_name}" in said.stdout + said.stderr
        tags = subprocess.run(["ovs-vsctl", "--format=csv", "--columns=name,tag", "list", "port"],
                              capture_output=True, text=True, check=True).stdout
        assert tags.count(",42") == 2 and tags.count(",43") == 1, tags
        assert _ping(project, "a", "192.168.42.12")  # the same VLAN
        assert not _ping(project, "a", "192.168.42.13")  # another VLAN, the same subnet: not reached
        assert not _ping(project, "c", "192.168.42.11")
        # the tag comes back with the port at every start (LXC's script): after a restart too
        project.env("reload", "b")
        assert _ping(project, "b", "192.168.42.11") and not _ping(project, "b", "192.168.42.13")
        project.env("destroy", "-f", "c")
        assert ovs.exists(bridge_name)  # a and b are still on it
    finally:
        project.env("destroy", "-f", check_rc=None)
    try:
        assert not ovs.exists(bridge_name)  # made by vbox, unused: removed
        assert ovs.exists(theirs) and ovs.ports(theirs) == []  # not vbox's: stays, without our port
        assert find_leaks(project.id) == []
        assert not [line for line in find_leaks() if bridge_name in line]
    finally:
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", theirs], check=False)


@pytest.fixture
def host_bridge():
    """A Linux bridge with a DHCP server of its own (dnsmasq, started and ended by the test)."""
    name = f"vbxtb{secrets.token_hex(2)}"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "add", "10.78.0.1/24", "dev", name], check=True)
    subprocess.run(["ip", "link", "set", name, "up"], check=True)
    dnsmasq = subprocess.Popen(["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
                                f"--interface={name}", "--bind-interfaces", "--except-interface=lo",
                                "--dhcp-range=10.78.0.50,10.78.0.99,12h", "--dhcp-leasefile=/dev/null",
                                f"--pid-file=/tmp/{name}.pid"])
    try:
        yield name
    finally:
        dnsmasq.terminate()
        dnsmasq.wait(timeout=10)
        subprocess.run(["ip", "link", "del", name], check=False)
        if os.path.exists(f"/tmp/{name}.pid"):
            os.unlink(f"/tmp/{name}.pid")


def test_host_bridge_dhcp(debian12, tmp_path, host_bridge):
    project = Project(tmp_path / "lan")
    project.folder.mkdir(parents=True)
    project.write(f'[machines.web]\nfolders = []\nnetworks = [{{ bridge = "{host_bridge}" }}]\n')
    try:
        project.env("up")
        address = ""
        for _ in range(100):  # the LAN's DHCP answers in its own time
            out = project.ssh("web", "ip -4 -o addr show dev eth1")
            if "10.78.0." in out:
                address = out.split("inet ")[1].split("/")[0]
                break
            time.sleep(0.2)
        assert address.startswith("10.78.0."), "no address from the bridge's DHCP"
        assert subprocess.run(["ping", "-c1", "-W2", address], capture_output=True).returncode == 0
    finally:
        project.env("destroy", "-f", check_rc=None)
    assert find_leaks(project.id) == []
    bridge_ports = os.listdir(f"/sys/class/net/{host_bridge}/brif")
    assert bridge_ports == []  # the machine's port went with it; the bridge (not vbox's) stays


@pytest.mark.slow
def test_kvm_and_lxc_on_one_vlan(debian12, tmp_path, bridge_name):
    project = Project(tmp_path / "mixed")
    project.folder.mkdir(parents=True)
    project.write(f"""
[defaults]
folders = []
[machines.vm]
provider = "kvm"
memory = "768M"
networks = [{{ ovs = "{bridge_name}", vlan = 7, address = "192.168.7.21/24" }}]
[machines.ct]
networks = [{{ ovs = "{bridge_name}", vlan = 7, address = "192.168.7.22/24" }}]
[machines.other]
networks = [{{ ovs = "{bridge_name}", vlan = 8, address = "192.168.7.23/24" }}]
""")
    try:
        project.env("up")
        assert project.ssh("vm", "ip -4 -o addr show | grep -c 192.168.7.21").strip() == "1"
        assert _ping(project, "ct", "192.168.7.21") and _ping(project, "vm", "192.168.7.22")
        assert not _ping(project, "vm", "192.168.7.23")
    finally:
        project.env("destroy", "-f", check_rc=None)
    assert not ovs.exists(bridge_name)
    assert find_leaks(project.id) == []
