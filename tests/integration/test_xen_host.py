"""Xen end to end on a Xen host that vbox brings up itself: the xen-host box (Xen 4.17 and
a Debian dom0) as a KVM machine of the Envfile, under TCG where KVM does not work, and a
Xen guest hosted on it through libvirt's libxl driver, then moved (cold) to a second such
host. Slow: it builds the xen-host box the first time, and everything runs under
emulation."""

from __future__ import annotations

import json

import pytest

from providers.leaks import find as find_leaks
from tests.integration.conftest import vbox
from tests.integration.test_lxc import Project

pytestmark = pytest.mark.slow(minutes=15)  # the suite's longest: its workers start with it

ENVFILE = """\
[machines.xenhost]
box = "xen-host"
provider = "kvm"
cpus = 2
memory = "3G"
boot_timeout = 600

[machines.xenhost2]
box = "xen-host"
provider = "kvm"
cpus = 2
memory = "2G"
boot_timeout = 900

[machines.guest]
provider = "xen"
host = "xen+ssh://xenhost/system"
mode = "{mode}"
memory = "{memory}"
boot_timeout = 900
provision = [{{ shell = "echo provisioned-on-$(cat /sys/hypervisor/type) | sudo tee /root/mark" }}]
"""


@pytest.fixture(scope="module")
def xen_host_box(host, debian12):
    from boxes.store import BoxStore

    vbox("box", "build", "xen-host", timeout=2400, check_rc=0)
    return BoxStore().get("xen-host")


def _on_host(project: Project, command: str) -> str:
    return project.ssh("xenhost", command)


def test_a_xen_guest_on_a_xen_host_that_vbox_brings_up(xen_host_box, tmp_path):
    project = Project(tmp_path / "xen")
    project.folder.mkdir()
    project.write(ENVFILE.format(mode="pv", memory="512M"))
    try:
        # `env up` brings the guest's host up first (and the second host beside it)
        result = project.env("up", timeout=3600)
        assert "xenhost" in result.stdout and "guest" in result.stdout
        # the host: Xen with HVM support, and libvirt's Xen driver answering
        assert _on_host(project, "cat /sys/hypervisor/type") == "xen\n"
        info = _on_host(project, "sudo xl info")
        caps = next(line for line in info.splitlines() if line.startswith("virt_caps")).split(":", 1)[1].split()
        assert "pv" in caps and "hvm" in caps, info
        assert "xenpvh" in _on_host(project, "virsh -c xen:///system capabilities")
        # the guest: a Xen guest, provisioned, reached through its host with its own host key
        assert project.ssh("guest", "cat /sys/hypervisor/type") == "xen\n"
        assert project.ssh("guest", "sudo cat /root/mark") == "provisioned-on-xen\n"
        assert project.ssh("guest", "hostname") == "guest\n"
        obj = f"vbox-{project.id}-guest"
        assert obj in _on_host(project, "virsh -c xen:///system list --name")
        status = project.status()
        assert status["guest"]["state"] == "running" and status["guest"]["provider"] == "xen"
        config = project.env("ssh-config", "guest").stdout
        assert "ProxyCommand ssh" in config and "StrictHostKeyChecking yes" in config
        # moved to the other Xen host: cold, and said why; shut down here, started there with
        # the Envfile's memory (changed meanwhile), as `up` starts a halted machine (one guest
        # boot for both: they take minutes under emulation); its files kept, its
        # provisioning not repeated, nothing of it left on the first host
        project.ssh("guest", "echo kept | sudo tee /root/kept")
        boot_id = project.ssh("guest", "cat /proc/sys/kernel/random/boot_id")
        project.write(ENVFILE.format(mode="pv", memory="640M"))
        moved = project.env("migrate", "guest", "--to", "xenhost2", timeout=2400)
        assert "moves cold" in moved.stdout and "memory only" in moved.stdout, moved.stdout
        assert "moved cold to xen+ssh://xenhost2/system" in moved.stdout, moved.stdout
        assert "provision" not in moved.stdout, moved.stdout
        assert project.ssh("guest", "sudo cat /root/mark /root/kept; hostname") == "provisioned-on-xen\nkept\nguest\n"
        assert project.ssh("guest", "cat /proc/sys/kernel/random/boot_id") != boot_id  # shut down, booted there
        mem_kib = int(project.ssh("guest", "awk '/MemTotal/ {print $2}' /proc/meminfo"))
        assert 540 * 1024 < mem_kib <= 640 * 1024, mem_kib
        assert project.status()["guest"]["host"] == "xen+ssh://xenhost2/system"
        assert obj in project.ssh("xenhost2", "virsh -c xen:///system list --name")
        assert obj not in _on_host(project, "virsh -c xen:///system list --all --name")
        volumes = _on_host(project, "virsh -c xen:///system vol-list vbox")
        assert project.id not in volumes and "box-" not in volumes, volumes
        # destroy the guest: nothing of it is left on the Xen host it is on
        project.env("destroy", "-f", "guest", timeout=600)
        assert obj not in project.ssh("xenhost2", "virsh -c xen:///system list --all --name")
        volumes = project.ssh("xenhost2", "virsh -c xen:///system vol-list vbox")
        assert project.id not in volumes and "box-" not in volumes, volumes
    finally:
        project.env("destroy", "-f", check_rc=None, timeout=900)
    assert find_leaks(project.id) == []
    assert not (project.folder / ".vbox").exists()


def test_up_of_a_guest_whose_host_does_not_answer(debian12, tmp_path):
    """A Xen host that does not answer (a closed port of this host): one clear error naming
    the URI, nothing made."""
    project = Project(tmp_path / "nohost")
    project.folder.mkdir()
    project.write('[machines.guest]\nprovider = "xen"\nhost = "xen+ssh://root@127.0.0.1:1/system"\n')
    result = project.env("up", check_rc=1, timeout=300)
    assert "xen+ssh://root@127.0.0.1:1/system" in result.stderr and "does not answer" in result.stderr
    state = project.folder / ".vbox" / "state.json"
    assert not state.exists() or "guest" not in json.loads(state.read_text()).get("machines", {})
    assert find_leaks(project.id) == []
    project.env("destroy", "-f", check_rc=None)
