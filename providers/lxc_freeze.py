"""A running container frozen for a snapshot's copy, and thawed again; and one that a
killed vbox left frozen, thawed by the next command. The mark file in its folder says
vbox holds it frozen."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

from vbox_cli import proc
from vbox_cli.errors import VboxError

if TYPE_CHECKING:
    from providers.lxc import LxcProvider

FROZEN_MARK = "frozen"  # there while vbox holds the container frozen for a snapshot


def freeze(machines: LxcProvider, object_name: str, pid: int, frozen: bool) -> None:
    """Through the container's cgroup (a 2 ms poll); through LXC's own tools (which poll
    every second) where this process cannot find that cgroup (a host whose cgroup
    mount is not its own namespace's, as in a container)."""
    from providers.stats import freeze as through_cgroup

    try:
        through_cgroup(pid, object_name, frozen)
    except (VboxError, OSError):
        machines.tool("lxc-freeze" if frozen else "lxc-unfreeze", object_name)


def thaw(machines: LxcProvider, object_name: str) -> None:
    pid = machines.init_pid(object_name)
    if pid is not None:
        freeze(machines, object_name, pid, False)
    (machines.folder(object_name) / FROZEN_MARK).unlink(missing_ok=True)


def thaw_left_frozen(machines: LxcProvider, object_name: str, timeout: float = 30) -> None:
    """A container a killed vbox left frozen, thawed. Its lxc-freeze (the slow way, where
    vbox cannot reach the container's cgroup) outlives the vbox that ran it and may
    still be at work: thawed before it ends, the container would be frozen again after,
    for good (sshd accepting connections and never answering). Wait for it first."""
    mine = [b"lxc-freeze", b"-P", str(machines.path).encode(), b"-n", object_name.encode()]
    deadline = time.monotonic() + timeout
    while any(argv[:5] == mine for _pid, argv in proc.processes()) and time.monotonic() < deadline:
        time.sleep(0.1)
    thaw(machines, object_name)


@contextmanager
def frozen(machines: LxcProvider, object_name: str):
    """A running container frozen while the block runs; yields whether it runs."""
    pid = machines.init_pid(object_name)  # None: stopped
    if pid is None:
        yield False
        return
    (machines.folder(object_name) / FROZEN_MARK).touch()  # the next command thaws it if this one is killed
    try:
        freeze(machines, object_name, pid, True)
        yield True
    finally:  # a freeze that failed half-way may have frozen it all the same
        thaw(machines, object_name)
