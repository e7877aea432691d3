"""A Xen host that vbox brings up itself: the xen-host box (Xen 4.17 and a Debian dom0)
booted as a KVM machine, Xen as the multiboot kernel, under TCG where KVM does not work.
It is where Xen guests will be tested. Slow: it builds a second box the first time."""

from __future__ import annotations

import pytest

from providers.leaks import find as find_leaks
from tests.integration.conftest import vbox
from tests.integration.test_lxc import Project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def xen_host_box(host):
    from boxes.store import BoxStore

    vbox("box", "build", "xen-host", timeout=2400, check_rc=0)
    return BoxStore().get("xen-host")


def test_vbox_brings_up_a_xen_host(xen_host_box, tmp_path):
    project = Project(tmp_path / "xen")
    project.folder.mkdir()
    project.write('[machines.xenhost]\nbox = "xen-host"\nprovider = "kvm"\ncpus = 2\nmemory = "3G"\n'
                  "boot_timeout = 600\n")
    try:
        project.env("up", timeout=900)
        assert project.ssh("xenhost", "cat /sys/hypervisor/type") == "xen\n"  # dom0 runs on Xen
        assert project.ssh("xenhost", "hostname") == "xenhost\n"
        info = project.ssh("xenhost", "sudo xl info")
        caps = next(line for line in info.splitlines() if line.startswith("virt_caps")).split(":", 1)[1].split()
        assert "pv" in caps and "hvm" in caps, info
        domains = project.ssh("xenhost", "sudo xl list")
        assert "Domain-0" in domains
        assert "xenhost" in project.env("console", "xenhost", "--tail", "200").stdout
    finally:
        project.env("destroy", "-f", check_rc=None)
    assert find_leaks(project.id) == []
