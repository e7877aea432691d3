"""env doctor on the real host, and the KVM/TCG decision checked by running guests."""

from __future__ import annotations

import json
import os

from providers.accel import probe, run_guest
from tests.integration.conftest import vbox


def test_doctor_reports_a_ready_host(debian12):
    report = json.loads(vbox("doctor", "--json", check_rc=0).stdout)
    names = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is True
    for name in ("debootstrap", "qemu", "qemu-img", "libvirt", "virtlogd", "lxc", "lxcfs", "kvm"):
        assert names[name]["status"] in ("ok", "warn"), names[name]
    assert "QEMU driver" in names["libvirt"]["detail"]
    table = vbox("doctor", check_rc=0).stdout
    assert table.splitlines()[0].split() == ["CHECK", "STATUS", "DETAIL", "FIX"]


def test_accel_probe_decision_holds_when_tried(debian12):
    kernel = debian12.artefact("kernel")
    # the probe guest itself is sound: under TCG the kernel runs to its panic
    assert run_guest("tcg", kernel, timeout=120) == (True, "")
    result = probe(kernel)
    if result.accel == "kvm":
        assert run_guest("kvm", kernel, timeout=60)[0]
    elif os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK):
        # /dev/kvm is there, yet the probe chose TCG: a KVM guest really does not get through
        ok, why = run_guest("kvm", kernel, timeout=15)
        assert not ok and why
