"""env suspend / resume of a container: through CRIU where `criu check` passes here; where
it does not (Debian 12's CRIU on a newer kernel), CRIU is missing, or its dump fails (a
CRIU 4.1 built from Debian's source gets as far as that here), suspend says what blocks
it and the container runs on, its processes too. A KVM machine's: test_kvm_control.py."""

from __future__ import annotations

import shutil
import subprocess

from tests.integration.test_snapshots import project  # noqa: F401 - the fixture (destroyed, no leaks)

COUNTER = "nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done' >/dev/null 2>&1 & echo $!"


def test_container_suspend_through_criu_or_what_blocks_it(project):  # noqa: F811
    project.write("[machines.c]\n")
    project.env("up")
    pid = project.ssh("c", COUNTER).strip()
    if shutil.which("criu") is None:  # setup does not install it (it cannot run on this kernel)
        result = project.env("suspend", "c", check_rc=1)
        assert "needs CRIU, which is not installed" in result.stdout + result.stderr
        assert project.status()["c"]["state"] == "running"
        return
    criu = subprocess.run(["criu", "check"], capture_output=True, text=True)
    if criu.returncode != 0:
        result = project.env("suspend", "c", check_rc=1)
        said = result.stdout + result.stderr
        assert "cannot checkpoint on this host" in said and "CRIU" in said
        first = next(line for line in (criu.stderr + criu.stdout).splitlines() if line.strip())
        assert first.split(": ", 1)[-1] in said  # CRIU's own words
        assert project.status()["c"]["state"] == "running" and project.ssh("c", "echo up") == "up\n"
        return
    boot = project.ssh("c", "cat /proc/sys/kernel/random/boot_id")
    result = project.env("suspend", "c", check_rc=None)
    if result.returncode != 0:  # CRIU runs here but cannot dump this container: its reason, and it runs on
        said = result.stdout + result.stderr
        assert "CRIU could not checkpoint it: " in said and "Dumping FAILED" not in said, said
        assert project.status()["c"]["state"] == "running"
        assert project.ssh("c", f"cat /proc/{pid}/comm").strip() == "sh"
        return
    assert project.status()["c"]["state"] == "suspended"
    project.env("resume", "c")
    assert project.ssh("c", "cat /proc/sys/kernel/random/boot_id") == boot
    assert project.ssh("c", f"cat /proc/{pid}/comm").strip() == "sh"
