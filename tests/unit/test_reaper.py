"""providers/reaper.py with real processes: what its program leaves behind is its, not
PID 1's, and reaped at once; it ends when nothing is left (no root needed)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import providers.reaper

REAPER = providers.reaper.__file__


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_what_the_program_leaves_is_the_reapers_and_is_reaped(tmp_path):
    pidfile = tmp_path / "orphan.pid"
    # the program starts a process and ends at once, as `libvirtd --daemon` does
    reaper = subprocess.Popen([sys.executable, "-I", "-S", REAPER, "sh", "-c", f"sleep 1 & echo $! > {pidfile}"])
    try:
        deadline = time.monotonic() + 10
        while not pidfile.exists() or not pidfile.read_text().strip():
            assert time.monotonic() < deadline, "the program never ran"
            time.sleep(0.01)
        orphan = int(pidfile.read_text())
        while parent_of(orphan) != reaper.pid:  # sh ends; its child goes to the reaper, not to PID 1
            assert time.monotonic() < deadline, f"the orphan's parent is {parent_of(orphan)}"
            time.sleep(0.01)
        assert reaper.poll() is None  # it waits while the orphan runs
        assert reaper.wait(timeout=10) == 0  # and ends when nothing is left
        assert not Path(f"/proc/{orphan}").exists()  # reaped by it: no zombie passed on
    finally:
        if reaper.poll() is None:
            reaper.kill()
            reaper.wait()


def test_a_program_that_cannot_run_ends_the_reaper():
    reaper = subprocess.run([sys.executable, "-I", "-S", REAPER, "/nonexistent/program"], capture_output=True,
                            text=True, timeout=30)
    assert reaper.returncode == 127 and "cannot run /nonexistent/program: No such file" in reaper.stderr


def test_the_programs_failure_is_the_reapers():
    reaper = subprocess.run([sys.executable, "-I", "-S", REAPER, "sh", "-c", "exit 3"], capture_output=True,
                            text=True, timeout=30)
    assert reaper.returncode == 3 and "sh -c exit 3 ended with status 3" in reaper.stderr


def test_no_program_is_a_usage_error():
    reaper = subprocess.run([sys.executable, "-I", "-S", REAPER], capture_output=True, text=True, timeout=30)
    assert reaper.returncode == 2 and "usage" in reaper.stderr
