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


def test_a_mount_left_by_an_ended_lxcfs_is_found_and_repaired(tmp_path):
    """A mount outlives its lxcfs (the daemon's process ended, as at the end of a session):
    the check must not call it fine, since LXC's hook then skips it and machines see the
    host's memory. Our own lxcfs on a folder of the test's, ended by its PID."""
    import signal
    import subprocess
    import time

    from providers.host import check_lxcfs, lxcfs_mounted

    mount = str(tmp_path / "lxcfs")
    os.mkdir(mount)
    daemon = subprocess.Popen(["lxcfs", "-f", "-p", str(tmp_path / "lxcfs.pid"), mount],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not check_lxcfs(mount).ok and time.monotonic() < deadline:
            time.sleep(0.1)
        assert check_lxcfs(mount).ok
        assert "MemTotal" in open(f"{mount}/proc/meminfo").read()
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=10)
        assert lxcfs_mounted(mount)  # the mount is still there ...
        check = check_lxcfs(mount)  # ... and no longer answers
        assert check.status == "missing" and "no longer answers" in check.detail
        assert check.repair is not None and check.daemons == ("lxcfs",)
        check.repair()
        assert not lxcfs_mounted(mount)
        assert "nothing mounted" in check_lxcfs(mount).detail
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        if lxcfs_mounted(mount):
            subprocess.run(["umount", "-l", mount], check=False)
