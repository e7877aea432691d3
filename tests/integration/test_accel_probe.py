"""The KVM probe of another host, asked through libvirt (providers/accel.probe_libvirt),
here of the real libvirtd: a transient guest boots the box's kernel, and its console,
read through libvirt, must show the kernel's panic. Under TCG (virt_type "qemu") the
kernel always gets there, so the probe itself can be checked on any host."""

from __future__ import annotations

import pytest

from providers.accel import PROBE_PREFIX, probe_libvirt
from providers.hosts import SYSTEM_URI, open_libvirt

pytestmark = pytest.mark.integration


def _probe_domains(conn) -> list[str]:
    return [d.name() for d in conn.listAllDomains() if d.name().startswith(PROBE_PREFIX)]


def test_the_probe_reads_the_guest_console_through_libvirt(debian12):
    conn = open_libvirt(SYSTEM_URI)
    result = probe_libvirt(conn, str(debian12.artefact("kernel")), timeout=120, virt_type="qemu")
    assert "booted a kernel" in result.reason, result
    assert _probe_domains(conn) == []


def test_a_guest_that_cannot_start_means_tcg(host, tmp_path):
    conn = open_libvirt(SYSTEM_URI)
    result = probe_libvirt(conn, str(tmp_path / "no-such-kernel"), timeout=30, virt_type="qemu")
    assert result.accel == "tcg" and "could not start a QEMU guest" in result.reason, result
    assert _probe_domains(conn) == []
