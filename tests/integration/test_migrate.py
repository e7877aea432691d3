"""`env migrate` of a KVM machine to a second libvirt host that vbox brings up itself: the
kvm-host box (libvirt 9.0, QEMU 7.2) as an LXC machine of the same Envfile, whose QEMU
runs the guest under TCG as this host's does. Live there (the same boot, a process keeps
its PID, a file written and flushed before the move read back from the disk after it, the
machine on that host's project network, SSH and its forwarded port through the host),
then a snapshot taken there, a live move back refused because of it, and a cold move
back of the halted machine with the snapshot, its disk byte for byte, booted here. Nothing
of the machine stays on the host it left. Slow: it builds the kvm-host box the first time
(about 2 minutes), and boots a VM under TCG twice."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request

import pytest

from providers.leaks import find as find_leaks
from tests.integration.conftest import vbox
from tests.integration.test_lxc import Project

pytestmark = pytest.mark.slow

ENVFILE = """\
[machines.kvmhost]
box = "kvm-host"
memory = "2G"
cpus = 2
folders = []

[machines.app]
provider = "kvm"
memory = "512M"
folders = []
provision = [{ shell = "echo one | sudo tee /root/step1" }]
ports = [{ host = PORT, guest = 8080, auto = true }]
"""
SERVE = ("mkdir -p /tmp/www && echo served-by-app > /tmp/www/index.html && cd /tmp/www && "
         "(nohup python3 -m http.server 8080 </dev/null >/dev/null 2>&1 &)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served(project: Project) -> str:
    """What the machine's web server answers through its forwarded port (it may take a moment to start)."""
    port = json.loads(project.env("port", "--json").stdout)["ports"][0]["host"]
    for _ in range(20):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
                return answer.read().decode()
        except OSError:
            time.sleep(0.5)
    return ""


@pytest.fixture(scope="module")
def kvm_host_box(host, debian12):
    from boxes.store import BoxStore

    vbox("box", "build", "kvm-host", timeout=1800, check_rc=0)
    return BoxStore().get("kvm-host")


@pytest.fixture
def project(kvm_host_box, tmp_path):
    folder = tmp_path / "mig"
    folder.mkdir()
    p = Project(folder)
    yield p
    p.env("destroy", "-f", check_rc=None)
    assert find_leaks(p.id) == []


def boot_id(project: Project) -> str:
    return project.ssh("app", "cat /proc/sys/kernel/random/boot_id").strip()


def here(project: Project) -> tuple[list[str], list[str]]:
    """The machine's domains and volumes in this host's libvirt."""
    domains = subprocess.run(["virsh", "list", "--all", "--name"], capture_output=True, text=True).stdout.split()
    volumes = subprocess.run(["virsh", "vol-list", "vbox"], capture_output=True, text=True).stdout
    obj = f"vbox-{project.id}-app"
    return [d for d in domains if d == obj], [line.split()[0] for line in volumes.splitlines() if obj in line]


def on_kvmhost(project: Project) -> tuple[list[str], list[str]]:
    obj = f"vbox-{project.id}-app"
    domains = project.ssh("kvmhost", "sudo virsh list --all --name").split()
    volumes = project.ssh("kvmhost", "sudo virsh vol-list vbox || true")
    return [d for d in domains if d == obj], [line.split()[0] for line in volumes.splitlines() if obj in line]


def test_a_kvm_machine_migrates_live_to_a_second_host_and_cold_back(project):
    project.write(ENVFILE.replace("PORT", str(free_port())))
    project.env("up")
    project.ssh("app", SERVE)
    assert served(project) == "served-by-app\n"
    kvmhost = project.status()["kvmhost"]["address"]
    before = boot_id(project)
    pid = project.ssh("app", "nohup sleep 100000 >/dev/null 2>&1 & echo $!").strip()
    project.ssh("app", "echo written-before | sudo tee /root/data >/dev/null; sync")
    assert json.loads(project.env("snapshot", "list", "--all", "--json").stdout)["snapshots"]  # the step snapshots

    moved = project.env("migrate", "app", "--to", "kvmhost")
    assert "migrated live to qemu+ssh://kvmhost/system" in moved.stdout
    assert "step snapshots stay behind" in moved.stdout + moved.stderr
    status = project.status()["app"]
    assert status["state"] == "running" and status["host"] == "qemu+ssh://kvmhost/system"
    # on kvmhost's project network (not this host's), reached through kvmhost
    assert status["address"].rsplit(".", 1)[0] != kvmhost.rsplit(".", 1)[0]
    assert project.ssh("app", "ip -4 -o addr show eth0").split()[3].split("/")[0] == status["address"]
    assert boot_id(project) == before  # the same boot: it was not restarted
    assert served(project) == "served-by-app\n"  # its forward follows it, through kvmhost
    # its resolver names the DNS of the network it is on now (said live; its credential too)
    assert f"nameserver {status['address'].rsplit('.', 1)[0]}.1\n" in project.ssh("app", "cat /etc/resolv.conf")
    assert project.ssh("app", f"cat /proc/{pid}/comm").strip() == "sleep"
    project.ssh("app", "echo 3 | sudo tee /proc/sys/vm/drop_caches >/dev/null")  # read back from its disk
    assert project.ssh("app", "sudo cat /root/data /root/step1") == "written-before\none\n"
    assert here(project) == ([], [])  # nothing of it left on this host
    domains, volumes = on_kvmhost(project)
    assert domains and f"vbox-{project.id}-app.qcow2" in volumes
    assert "nothing to do" in project.env("up").stdout  # every verb finds it there

    # a snapshot there; a live move back is refused because of it, and it runs on
    project.ssh("app", "echo after | sudo tee /root/after >/dev/null")
    assert "saved s1 (running)" in project.env("snapshot", "save", "app", "s1").stdout
    refused = project.env("migrate", "app", "--to", "qemu:///system", check_rc=1)
    assert "app has snapshots (s1), which a live migration cannot take along" in refused.stdout + refused.stderr
    assert "--cold" in refused.stdout + refused.stderr
    assert project.status()["app"]["state"] == "running"

    # halted there (its forward in kvmhost goes), then moved cold to this host with its snapshot
    project.env("halt", "app")
    assert "vbox:" not in project.ssh("kvmhost", "sudo iptables-save")
    obj = f"vbox-{project.id}-app"
    there = project.ssh("kvmhost", f"sudo sha256sum /var/lib/vbox/images/{obj}.qcow2").split()[0]
    back = project.env("migrate", "app", "--to", "qemu:///system")
    assert "moved cold to this host" in back.stdout and "started there" not in back.stdout
    status = project.status()["app"]
    assert status["state"] == "stopped" and status["host"] == ""
    assert subprocess.run(["sha256sum", f"/var/lib/vbox/images/{obj}.qcow2"], capture_output=True,
                          text=True).stdout.split()[0] == there  # its disk, byte for byte, its snapshot in it
    listed = json.loads(project.env("snapshot", "list", "--json").stdout)["snapshots"]
    assert [s["name"] for s in listed] == ["s1"]
    assert on_kvmhost(project) == ([], [])  # nothing of it left there
    domains, volumes = here(project)
    assert domains and f"{obj}.qcow2" in volumes
    # it boots here, from its disk as it was there, on this host's network, its forward made here
    project.env("up", "app")
    status = project.status()["app"]
    assert status["address"].rsplit(".", 1)[0] == kvmhost.rsplit(".", 1)[0]
    assert boot_id(project) != before
    assert f"nameserver {status['address'].rsplit('.', 1)[0]}.1\n" in project.ssh("app", "cat /etc/resolv.conf")
    assert project.ssh("app", "sudo cat /root/data /root/after") == "written-before\nafter\n"
    project.ssh("app", SERVE)
    assert served(project) == "served-by-app\n"
    # it is on this host already; a name that is neither machine nor URI
    again = project.env("migrate", "app", "--to", "qemu:///system", check_rc=1)
    assert "app is on this host already" in again.stderr
    wrong = project.env("migrate", "app", "--to", "nowhere", check_rc=2)
    assert "neither a machine of Envfile nor a libvirt URI" in wrong.stderr


LXC_ENVFILE = """\
[machines.kvmhost]
box = "kvm-host"
provider = "kvm"
memory = "2G"
cpus = 2
folders = []

[machines.app]
memory = "512M"
folders = []
provision = [{ shell = "echo one | sudo tee /root/step1" }]
"""


def test_an_lxc_machine_moves_cold_to_a_libvirt_lxc_host_and_back(project):
    """An LXC machine to the kvm-host box booted as a KVM machine (libvirt's LXC driver
    needs the cgroups of a kernel of its own), where libvirt runs it from an image of its
    root tree; halted and started there; then back into this host's LXC, its own layer
    holding only what differs from the box."""
    from pathlib import Path

    project.write(LXC_ENVFILE)
    project.env("up")
    obj = f"vbox-{project.id}-app"
    folder = Path("/var/lib/vbox/lxc") / obj
    project.ssh("app", "echo before | sudo tee /root/data && sudo rm /etc/issue")
    moved = project.env("migrate", "app", "--to", "kvmhost")
    assert "moves cold" in moved.stdout, moved.stdout
    assert "moved cold to lxc+ssh://kvmhost/system" in moved.stdout and "started there" in moved.stdout
    assert not folder.exists()  # nothing of it stays here
    status = project.status()["app"]
    assert status["state"] == "running" and status["host"] == "lxc+ssh://kvmhost/system"
    assert project.ssh("kvmhost", "sudo virsh -c lxc:///system list --name").split() == [obj]
    assert project.ssh("app", "sudo cat /root/data /root/step1") == "before\none\n"
    assert project.ssh("app", "test -e /etc/issue && echo kept || echo gone").strip() == "gone"
    assert project.ssh("app", "hostname").strip() == "app"
    assert f"inet {status['address']}/24" in project.ssh("app", "ip -4 -o addr show eth0")
    # its resolver is that network's DNS, which names it
    gateway = status["address"].rsplit(".", 1)[0] + ".1"
    assert f"nameserver {gateway}\n" in project.ssh("app", "cat /etc/resolv.conf")
    assert project.ssh("app", f"getent ahostsv4 app.{project.id}.vbox | head -1").split()[0] == status["address"]
    # its life there: halted cleanly, started again, provisioned once only
    halted = project.env("halt", "app")
    assert "powered off" not in halted.stdout, halted.stdout
    assert project.status()["app"]["state"] == "stopped"
    project.env("up", "app")
    assert project.ssh("app", "sudo cat /root/step1") == "one\n"
    project.ssh("app", "echo there | sudo tee /root/there")
    # back to this host's LXC
    back = project.env("migrate", "app", "--to", "lxc:///system")
    assert "moved cold to this host" in back.stdout, back.stdout
    status = project.status()["app"]
    assert status["state"] == "running" and status["host"] == ""
    assert project.ssh("app", "sudo cat /root/data /root/there") == "before\nthere\n"
    assert project.ssh("app", "test -e /etc/issue && echo kept || echo gone").strip() == "gone"
    assert f"nameserver {status['address'].rsplit('.', 1)[0]}.1\n" in project.ssh("app", "cat /etc/resolv.conf")
    assert project.ssh("kvmhost", "sudo virsh -c lxc:///system list --all --name").split() == []
    assert obj not in project.ssh("kvmhost", "sudo virsh vol-list vbox || true")
    upper = subprocess.run(["du", "-sx", "--block-size=1M", str(folder / "delta/upper")], capture_output=True,
                           text=True, check=True).stdout.split()[0]
    assert int(upper) < 20  # what differs from the box (whose tree is hundreds of MiB)
