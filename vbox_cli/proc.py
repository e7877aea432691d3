"""Every external command goes through here.

A failure raises CommandError carrying the command line (copy-pasteable), its exit
status and the tail of its output; a missing program is reported as such.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections import deque
from typing import Callable, Mapping, Sequence

from vbox_cli.errors import CommandError, VboxError


class CommandTimeout(VboxError):
    """A command ran past its time-out; it was killed."""

    def __init__(self, argv: Sequence[str], timeout: float, stderr: str = ""):
        super().__init__(f"command timed out after {timeout:g} s: {shlex.join(argv)}")
        self.argv, self.timeout, self.stderr = list(argv), timeout, stderr


def _not_found(argv: Sequence[str]) -> VboxError:
    return VboxError(f"program not found: {argv[0]} (running {shlex.join(argv)})", hint="run `env doctor --fix`")


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input: str | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    die_with_parent: bool = False,
) -> subprocess.CompletedProcess:
    """Run to completion, capturing stdout and stderr as text. `die_with_parent`: if vbox
    is killed meanwhile, the program gets SIGTERM (for one that may hang, like a probe)."""
    argv = [str(a) for a in argv]
    try:
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout,
            env=None if env is None else {**os.environ, **env}, cwd=cwd, errors="replace",
            preexec_fn=_die_with_parent if die_with_parent else None,
        )
    except FileNotFoundError:
        raise _not_found(argv) from None
    except subprocess.TimeoutExpired as exc:  # subprocess.run has killed it
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise CommandTimeout(argv, timeout or 0, stderr) from None
    if check and result.returncode != 0:
        raise CommandError(argv, result.returncode, (result.stdout or "") + (result.stderr or ""))
    return result


def _die_with_parent(signum: int = 15) -> None:
    # Runs in the child between fork and exec: if vbox is SIGKILLed, the child gets
    # `signum` (SIGTERM) instead of running on into a folder the next run will sweep away.
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum)


def stream(
    argv: Sequence[str],
    on_line: Callable[[str], None],
    *,
    env: Mapping[str, str] | None = None,
    tail_lines: int = 40,
) -> str:
    """Run, handing each output line (stdout and stderr merged) to on_line.

    Returns the output's tail. If this is interrupted (KeyboardInterrupt, SystemExit),
    the child is terminated and reaped before the exception goes on; if vbox itself
    is killed, the child is sent SIGTERM.
    """
    argv = [str(a) for a in argv]
    tail: deque[str] = deque(maxlen=tail_lines)
    try:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, errors="replace", env=None if env is None else {**os.environ, **env},
            preexec_fn=_die_with_parent,
        )
    except FileNotFoundError:
        raise _not_found(argv) from None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            on_line(line)
        returncode = proc.wait()
    except BaseException:
        terminate(proc)
        raise
    output = "\n".join(tail)
    if returncode != 0:
        raise CommandError(argv, returncode, output)
    return output


def spawn_daemon(argv: Sequence[str], log: str | os.PathLike) -> int:
    """Start a long-lived program in a session of its own (it outlives vbox), its output
    appended to `log`; returns its PID."""
    argv = [str(a) for a in argv]
    with open(log, "ab") as out:
        try:
            child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        except FileNotFoundError:
            raise _not_found(argv) from None
    return child.pid


def processes():
    """(pid, argv as bytes) of every process of this system whose command line can be read;
    not those of a container on this host (seen in /proc too, in a PID namespace of their
    own: a vbox in that container made them). Not by mount namespace: libvirt runs QEMU
    and virtiofsd in mount namespaces of their own."""
    try:
        ours = os.readlink("/proc/self/ns/pid")
    except OSError:
        ours = None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if ours is not None and os.readlink(f"/proc/{entry}/ns/pid") != ours:
                continue
        except OSError:
            continue
        yield int(entry), argv


def terminate(proc: subprocess.Popen, grace: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
