"""Warm starts for real: new KVM machines restored from a memory image of the box booted
once (providers/kvm_warm.py), each with its own identity; an image that does not restore
is removed and the machine boots cold."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import libvirt
import pytest

from providers.kvm_warm import warm_dir
from providers.leaks import find as find_leaks
from tests.integration.test_lxc import Project

pytestmark = pytest.mark.slow(minutes=3)

TWO = """
[defaults]
provider = "kvm"
memory = "512M"

[machines.a]
folders = []
provision = [{ shell = "echo provisioned > /root/once.log" }]

[machines.b]
folders = [{ host = ".", guest = "/vbox" }, { host = "docs", guest = "/srv/the docs", readonly = true }]
"""


@pytest.fixture
def project(debian12, tmp_path):
    folder = tmp_path / "warmproj"
    (folder / "docs").mkdir(parents=True)
    (folder / "docs" / "readme").write_text("read me\n")
    p = Project(folder)
    p.write(TWO)
    yield p
    p.env("destroy", "-f", check_rc=None)
    assert find_leaks(p.id) == []


def _domain(project, name):
    conn = libvirt.open("qemu:///system")
    try:
        return ET.fromstring(conn.lookupByName(f"vbox-{project.id}-{name}").XMLDesc(0))
    finally:
        conn.close()


def test_new_machines_start_warm_each_with_its_own_identity(project):
    project.env("up")
    status = project.status()
    for name in ("a", "b"):
        assert status[name]["state"] == "running"
        # restored, not booted: the kernel still has the image's command line
        assert "vbox.identity=channel" in project.ssh(name, "cat /proc/cmdline")
        assert project.ssh(name, "hostname") == f"{name}\n"
        domain = _domain(project, name)
        assert project.ssh(name, "cat /etc/machine-id").strip() == domain.findtext("uuid").replace("-", "")
        mac = domain.find("devices/interface/mac").get("address")
        assert project.ssh(name, "cat /sys/class/net/eth0/address").strip() == mac
        assert abs(int(project.ssh(name, "date +%s")) - time.time()) < 60  # its clock set, not the image's
        assert project.ssh(name, "systemctl is-system-running").strip() == "running"
    assert project.ssh("a", "sudo cat /root/once.log") == "provisioned\n"
    # b's synced folders, plugged in after its restore and mounted by its identity service
    assert project.ssh("b", "cat '/srv/the docs/readme'") == "read me\n"
    assert "Read-only" in project.env("ssh", "b", "--", "touch '/srv/the docs/x'", check_rc=None).stderr
    project.ssh("b", "echo from-b > /vbox/from-b")
    assert (project.folder / "from-b").read_text() == "from-b\n"
    # two machines of one image: their own randomness, and each other's names and addresses
    assert project.ssh("a", "cat /proc/sys/kernel/random/uuid") != project.ssh("b", "cat /proc/sys/kernel/random/uuid")
    assert project.ssh("a", "getent ahostsv4 b | head -1").split()[0] == status["b"]["address"]
    assert project.ssh("a", "ping -c 1 -W 5 b > /dev/null && echo ok") == "ok\n"
    assert list(warm_dir().glob("*.save"))
    # a reboot is a cold boot of the machine itself, and so is an up after halt
    boot = project.ssh("b", "cat /proc/sys/kernel/random/boot_id")
    project.env("ssh", "b", "--", "sudo systemctl reboot", check_rc=None)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        answer = project.env("ssh", "b", "--", "cat /proc/sys/kernel/random/boot_id", check_rc=None).stdout
        if answer and answer != boot:
            break
        time.sleep(2)
    assert "vbox.identity" not in project.ssh("b", "cat /proc/cmdline")
    assert project.ssh("b", "hostname") == "b\n"
    project.env("halt", "a")
    project.env("up", "a")
    assert "vbox.identity" not in project.ssh("a", "cat /proc/cmdline")
    assert project.ssh("a", "hostname") == "a\n"
    assert project.ssh("a", "sudo cat /root/once.log") == "provisioned\n"
    # b's synced folders, plugged in after its restore and mounted by its identity service
    assert project.ssh("b", "cat '/srv/the docs/readme'") == "read me\n"
    assert "Read-only" in project.env("ssh", "b", "--", "touch '/srv/the docs/x'", check_rc=None).stderr
    project.ssh("b", "echo from-b > /vbox/from-b")
    assert (project.folder / "from-b").read_text() == "from-b\n"


def test_an_image_that_does_not_restore_goes_and_the_machine_boots_cold(project):
    project.write(TWO.split("[machines.b]")[0])  # a alone
    started = time.time() - 1
    project.env("up")  # the image is there (made now or by an earlier test)
    # a first start cut short (an up killed before the machine had its identity) keeps the
    # domain's mark of a new machine: it shows as stopped, and the next up starts it again
    conn = libvirt.open("qemu:///system")
    try:
        conn.lookupByName(f"vbox-{project.id}-a").setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT, "<new/>", "vboxnew", "https://vbox.dev/xmlns/new/1",
            libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    finally:
        conn.close()
    assert project.status()["a"]["state"] == "stopped"
    again = project.env("up", "--no-provision")
    assert "started warm" in again.stdout + again.stderr
    assert project.status()["a"]["state"] == "running"
    assert project.ssh("a", "hostname") == "a\n"
    project.env("destroy", "-f")
    images = [p for p in warm_dir().glob("*.save") if p.stat().st_mtime >= started]  # its own: written at its start
    assert len(images) == 1
    for image in images:  # QEMU's stream cut short: libvirt's restore fails
        with open(image, "r+b") as f:
            f.truncate(200_000)
    up = project.env("up")
    assert project.status()["a"]["state"] == "running"
    assert "vbox.identity" not in project.ssh("a", "cat /proc/cmdline")  # booted
    assert project.ssh("a", "hostname") == "a\n"
    assert not any(image.exists() for image in images)  # the broken image went
    assert "did not restore" in up.stdout + up.stderr
