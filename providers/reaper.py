"""The parent of libvirtd where vbox starts it itself (no systemd as init): a child
subreaper that runs `libvirtd --daemon` and waits for every process orphaned under it.

libvirtd daemonizes, and so do the QEMU, virtiofsd and dnsmasq processes it starts: each
is left to the nearest subreaper above it, else to PID 1. A PID 1 that reaps late (a
container's `sleep infinity`, a sandbox's own init) keeps a stopped QEMU a zombie, and
libvirt's destroy waits until the process is gone: here 1.2 s of the 1.4 s of a KVM
machine's destroy, where QEMU itself ends in 45 ms (benchmarks/lifecycle.py). Under this
reaper a stopped QEMU is gone at once, wherever vbox runs.

It imports only the standard library and is started as a file (`python -I -S reaper.py
PROGRAM [ARG...]`, providers/daemons.py), so it needs nothing of vbox's installation. It
ends when it has no child left, after libvirtd and everything libvirtd started are gone,
with the program's own exit status.
"""

from __future__ import annotations

import ctypes
import os
import sys

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def become_subreaper() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def reap_all(program: int) -> int:
    """Wait for children until none is left; the exit status of the child `program`."""
    status = 0
    while True:
        try:
            pid, raw = os.wait()
        except ChildProcessError:
            return status
        except InterruptedError:
            continue
        if pid == program:
            status = os.waitstatus_to_exitcode(raw)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: reaper.py PROGRAM [ARG...]", file=sys.stderr)
        return 2
    if not become_subreaper():  # then it would only be a wrapper: run the program as it is
        os.execvp(argv[0], argv)
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(argv[0], argv)
        except OSError as exc:
            print(f"reaper: cannot run {argv[0]}: {exc.strerror}", file=sys.stderr, flush=True)
        os._exit(127)
    status = reap_all(pid)
    if status != 0:  # its log is the reaper's (providers/daemons.py REAPER_LOG)
        print(f"reaper: {' '.join(argv)} ended with status {status}", file=sys.stderr, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
