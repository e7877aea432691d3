"""Live changes of a running container's resources on `env up`: memory and CPUs through
its cgroup, seen inside at once (lxcfs), the same boot; memory lowered below what it
uses is refused by the kernel and said. KVM machines': tests/integration/test_kvm.py
(memory, disk) and test_incremental.py (a vCPU), on machines those tests boot anyway."""

from __future__ import annotations

import os

from tests.integration.test_lxc import Project
from tests.integration.test_snapshots import project  # noqa: F401 - the fixture (destroyed, no leaks)


def inside(project: Project) -> tuple[int, int, str]:
    memory = int(project.ssh("c", "free -m | awk '/^Mem:/ {print $2}'"))
    return memory, int(project.ssh("c", "nproc")), project.ssh("c", "cat /proc/sys/kernel/random/boot_id")


def test_container_memory_and_cpus_change_live(project):  # noqa: F811
    project.write('[machines.c]\nmemory = "256M"\ncpus = 1\n')
    project.env("up")
    memory, cpus, boot = inside(project)
    assert (memory, cpus) == (256, 1)
    project.write('[machines.c]\nmemory = "512M"\ncpus = 2\n')
    up = project.env("up")
    assert "applied live (no restart): memory 256M -> 512M, cpus 1 -> 2" in up.stdout
    assert "changed live (cpus, memory)" in up.stdout
    assert inside(project) == (512, min(2, os.cpu_count()), boot)
    assert project.status()["c"]["drift"] == []
    # a limit below what it uses: the kernel cannot reclaim it (the memory is held), up says so
    project.ssh("c", "nohup python3 -c 'import time; a = bytearray(200 * 1024 * 1024); time.sleep(600)' "
                     ">/dev/null 2>&1 &")
    project.ssh("c", "sleep 2")
    project.write('[machines.c]\nmemory = "128M"\ncpus = 2\n')
    refused = project.env("up")
    assert "not applied live: memory 512M -> 128M" in refused.stdout and "env reload c" in refused.stdout
    assert inside(project)[0] == 512
