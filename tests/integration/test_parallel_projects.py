"""Eight projects at once on this small host, each looping up, SSH, status and destroy:
every command succeeds, each reaches its own machine (all are called `web`), destroy
leaves nothing, and the daemons the machines use have no more processes or open files
after the run than before it."""

from __future__ import annotations

import pytest

from tests.integration.parallel_projects import run

pytestmark = [pytest.mark.slow, pytest.mark.exclusive]  # counts libvirtd's open files before and after


def test_eight_projects_loop_up_and_destroy_in_parallel(debian12, tmp_path):
    report = run(8, 60, tmp_path)
    assert report["problems"] == []
    assert report["rounds"] >= 8  # each project went round at least once
    assert all(left == [] for left in report["leaks"].values()), report["leaks"]
    for name, (processes, fds) in report["before"].items():
        after_processes, after_fds = report["after"][name]
        # no more than before: a daemon may close a file of its own meanwhile (libvirtd just
        # restarted by the test before this one did), which is no leak
        assert after_processes <= processes, f"{name}: {processes} processes before, {after_processes} after"
        assert after_fds <= fds, f"{name}: {fds} open files before, {after_fds} after"
