"""Running one piece of work per machine, in parallel, each machine's failure its own."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from vbox_cli.errors import VboxError, disk_error
from vbox_cli.events import Phase


@dataclass
class Result:
    machine: str
    ok: bool
    action: str  # what was done: "created, started, provisioned", "nothing to do", ...
    error: VboxError | None = None
    seconds: float = 0.0


def run_each(session, names: list[str], work: Callable[[str], str], jobs: int | None = None,
             finished: Callable[[str, bool], None] | None = None) -> list[Result]:
    """Run work(name) for each machine at once (at most `jobs`), in the order of `names`.
    Its return is what was done; an error fails that machine only, and the others finish.
    Each result is also an event, and goes to `finished(name, ok)` (order.Barrier)."""
    events = session.events

    def one(name: str) -> Result:
        started = time.monotonic()
        try:
            result = Result(name, True, _again_if_libvirt_broke(session, name, work), seconds=time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001 - each machine's failure is its own
            result = Result(name, False, "failed", _as_error(name, exc), time.monotonic() - started)
        if finished is not None:
            finished(name, result.ok)
        if not result.ok:
            events.phase(name, Phase.FAILED, result.error.message.splitlines()[0])
        events.machine_result(name, result.ok, result.action, result.seconds,
                              result.error.message if result.error else None,
                              result.error.hint if result.error else None)
        return result

    if len(names) <= 1:
        return [one(n) for n in names]
    with ThreadPoolExecutor(max_workers=jobs or len(names)) as pool:
        return list(pool.map(one, names))


def _again_if_libvirt_broke(session, name: str, work: Callable[[str], str]) -> str:
    """work(name); once more if libvirt's connection broke under it (libvirtd restarted),
    once connected again. Every verb's work is made to be run again: it looks at what
    exists before it acts, as the next command would."""
    from providers.hosts import lost_connection, reconnect

    try:
        return work(name)
    except Exception as exc:
        words = lost_connection(exc)
        if words is None:
            raise
        session.events.note(f"{name}: the connection to libvirt broke ({words}): connecting again", name)
    reconnect()
    return work(name)


def _as_error(name: str, exc: Exception) -> VboxError:
    """The user's error: vbox's own, a full disk, a broken libvirt connection; anything
    else is a bug, said so (with a traceback under VBOX_DEBUG)."""
    from providers.hosts import lost_error

    if isinstance(exc, VboxError):
        return exc
    known = disk_error(exc) or lost_error(exc)
    if known is not None:
        return VboxError(f"{name}: {known.message}", hint=known.hint)
    if _debug():
        import traceback

        traceback.print_exception(exc)
    return VboxError(f"{name}: internal error: {type(exc).__name__}: {exc}",
                     hint="run again with VBOX_DEBUG=1 for a traceback")


def remote_first(session, names: list[str], work: Callable[[str], str], jobs: int | None = None) -> list[Result]:
    """Guests of remote hosts first, then this host's machines (their hosts among them):
    a host machine must not go while its guests are being stopped."""
    placements = session.placements
    remote = [n for n in names if n in session.machines and placements[n].remote]
    local = [n for n in names if n not in remote]
    results = run_each(session, remote, work, jobs) if remote else []
    close_remote(session, remote)
    return results + (run_each(session, local, work, jobs) if local else [])


def close_remote(session, names: list[str]) -> None:
    """Close the connections to the hosts of these guests before those hosts go: closing
    a connection to a host that is gone hangs."""
    for name in names:
        host = session.placements[name].network_host
        if host is not None:
            host.close()


def _debug() -> bool:
    import os

    return bool(os.environ.get("VBOX_DEBUG"))
