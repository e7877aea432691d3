"""Suspending an LXC machine: its processes saved by CRIU (`lxc-checkpoint -s`) into its
folder's checkpoint/ and the container stopped; the next start restores them (same PIDs,
same state) instead of booting it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from providers.lxc_layer import discard
from vbox_cli import proc
from vbox_cli.errors import VboxError

CHECKPOINT = "checkpoint"  # a suspended container's processes, saved by CRIU (lxc-checkpoint)
# CRIU's error lines that say only that something before them failed, or that it could not
# raise its own file limit (it goes on without): never the reason a dump failed
_CONSEQUENCES = re.compile(r"Dumping FAILED|failed with -?\d+|exited, status=|RLIMIT_NOFILE for self")

# the container's own `lxc-checkpoint ARGS...` (the provider's tool, its name and path given)
Checkpoint = Callable[..., subprocess.CompletedProcess]


def has_checkpoint(folder: Path) -> bool:
    return (folder / CHECKPOINT).is_dir()


def checkpoint(folder: Path, lxc_checkpoint: Checkpoint) -> None:
    """CRIU is asked first whether it can work here at all (`criu check`), so that what
    blocks it is said."""
    name = folder.name
    if shutil.which("criu") is None:
        raise VboxError(f"{name}: suspending a container needs CRIU, which is not installed",
                        hint="apt-get install criu")
    check = proc.run(["criu", "check"], check=False, timeout=60)
    if check.returncode != 0:
        words = [line.split(": ", 1)[-1] for line in (check.stderr + check.stdout).splitlines() if line.strip()]
        version = proc.run(["criu", "--version"], check=False).stdout.split()[1:2]
        raise VboxError(f"{name}: CRIU {' '.join(version)} cannot checkpoint on this host "
                        f"(kernel {os.uname().release}): {'; '.join(words[:2]) or 'criu check failed'}",
                        hint="`env halt` it instead (a newer CRIU may know this kernel)")
    target = folder / CHECKPOINT
    discard(target)
    target.mkdir(mode=0o700)
    result = lxc_checkpoint("-s", "-D", str(target))
    if result.returncode != 0:
        log = target / "dump.log"
        reason = blocker(log.read_text(errors="replace") if log.exists() else "")
        discard(target)
        raise VboxError(f"{name}: CRIU could not checkpoint it: "
                        f"{reason or result.stderr.strip() or 'lxc-checkpoint failed'}",
                        hint="it runs on; `env halt` it instead")


def blocker(log: str) -> str:
    """What stopped a dump, from CRIU's dump.log: its first error that is not a consequence
    of an earlier one, without the source location ("Error (criu/namespaces.c:460): ...")."""
    errors = [line for line in log.splitlines() if "Error (" in line]
    causes = [line for line in errors if not _CONSEQUENCES.search(line)] or errors
    return " ".join(re.sub(r"^.*?Error \([^)]*\):", "", causes[0]).split()) if causes else ""


def restore(folder: Path, lxc_checkpoint: Checkpoint) -> bool:
    """A suspended container's processes restored (it runs then); False: it has none
    saved. The checkpoint goes either way: one that failed to restore is not tried again."""
    if not has_checkpoint(folder):
        return False
    result = lxc_checkpoint("-r", "-D", str(folder / CHECKPOINT))
    discard(folder / CHECKPOINT)
    if result.returncode == 0:
        return True
    raise VboxError(f"{folder.name}: CRIU could not restore it: {result.stderr.strip() or 'failed'}",
                    hint="the saved processes are gone; `env up` starts it afresh")
