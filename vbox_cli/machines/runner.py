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


def run_each(session, names: list[str], work: Callable[[str], str], jobs: int | None = None) -> list[Result]:
    """Run work(name) for each machine at once (at most `jobs`). Its return is what was
    done; an error fails that machine only, and the others finish. Each result is also
    an event."""
    events = session.events

    def one(name: str) -> Result:
        started = time.monotonic()
        try:
            result = Result(name, True, work(name), seconds=time.monotonic() - started)
        except VboxError as exc:
            result = Result(name, False, "failed", exc, time.monotonic() - started)
        except Exception as exc:  # a bug (or a full disk): say so, and let the other machines finish
            full = disk_error(exc)
            error = VboxError(f"{name}: {full.message}", hint=full.hint) if full else \
                VboxError(f"{name}: internal error: {type(exc).__name__}: {exc}",
                          hint="run again with VBOX_DEBUG=1 for a traceback")
            if _debug():
                import traceback

                traceback.print_exc()
            result = Result(name, False, "failed", error, time.monotonic() - started)
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
