"""env stats for LXC machines, read from the host: figures that move when the machine
works (CPU, disk, network), its memory limit, OOM kills and limit hits counted, and a
stopped machine shown without figures."""

from __future__ import annotations

import json

import pytest

from providers.leaks import find as find_leaks
from tests.integration.test_lxc import Project


@pytest.fixture
def project(debian12, tmp_path):
    folder = tmp_path / "stats"
    folder.mkdir()
    p = Project(folder)
    p.write('[machines.busy]\nmemory = "256M"\n\n[machines.idle]\nmemory = "128M"\nautostart = false\n')
    yield p
    p.env("destroy", "-f", check_rc=None)
    assert find_leaks(p.id) == []


def figures(project: Project) -> dict:
    return {m["name"]: m for m in json.loads(project.env("stats", "--json").stdout)["machines"]}


def test_stats_move_when_a_container_works(project):
    project.env("up")
    before = figures(project)
    assert before["idle"]["state"] == "not created" and "memory_used" not in before["idle"]
    busy = before["busy"]
    assert busy["memory_limit"] == 256 * 1024**2 and 0 < busy["memory_used"] < busy["memory_limit"]
    assert busy["processes"] >= 3 and busy["oom_kills"] == 0
    # work: CPU for a few seconds in the background, 64 MiB written, bytes over the network,
    # and a process that asks for more memory than the limit
    project.ssh("busy", "nohup timeout 6 sh -c 'while :; do :; done' >/dev/null 2>&1 &")
    project.ssh("busy", "dd if=/dev/zero of=/home/vbox/blob bs=1M count=64 status=none && sync")
    gateway = project.status()["busy"]["address"].rsplit(".", 1)[0] + ".1"
    project.ssh("busy", "python3 -c \"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                        f"[s.sendto(b'x' * 1000, ('{gateway}', 9)) for _ in range(5)]\"")
    hog = project.env("ssh", "busy", "--", "python3 -c 'a = bytearray(400 * 1024 * 1024)'", check_rc=None)
    assert hog.returncode != 0  # the kernel killed it (or the session it ran in) at the limit
    after = figures(project)["busy"]
    assert after["cpu_percent"] > 30, after  # the loop was running during the sample
    assert after["cpu_seconds"] > busy["cpu_seconds"] + 1
    assert after["disk_used"] - busy["disk_used"] >= 64 * 1024**2
    assert after["net_out"] - busy["net_out"] > 3000 and after["net_in"] > busy["net_in"]
    assert after["oom_kills"] >= 1 and after["memory_limit_hits"] > busy["memory_limit_hits"]
    table = project.env("stats").stdout
    assert "busy" in table and "256.0M" in table and "HITS" in table
    project.env("halt", "busy")
    stopped = figures(project)["busy"]
    assert stopped["state"] == "stopped" and "memory_used" not in stopped
