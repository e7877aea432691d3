"""The one gateway to external programs."""

from __future__ import annotations

import os
import time

import pytest

from vbox_cli import proc
from vbox_cli.proc import CommandTimeout


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_program_run_with_die_with_parent_ends_when_vbox_is_killed(tmp_path):
    pidfile = tmp_path / "pid"
    child = os.fork()
    if child == 0:  # plays vbox: runs a program that would hang, and is killed meanwhile
        try:
            proc.run(["sh", "-c", f"echo $$ > {pidfile}; exec sleep 300"], check=False, timeout=600,
                     die_with_parent=True)
        finally:
            os._exit(0)
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    program = int(pidfile.read_text())
    os.kill(child, 9)  # SIGKILL: no cleanup of vbox's runs
    os.waitpid(child, 0)
    deadline = time.monotonic() + 10
    while _alive(program):
        assert time.monotonic() < deadline, "the program outlived the vbox that ran it"
        time.sleep(0.05)


def test_a_time_out_kills_the_program_and_says_so():
    with pytest.raises(CommandTimeout) as info:
        proc.run(["sleep", "30"], timeout=0.3)
    assert "timed out after 0.3 s: sleep 30" in info.value.message
