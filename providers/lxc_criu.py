"""Suspending an LXC machine: its processes saved by CRIU (`lxc-checkpoint -s`) into its
folder's checkpoint/ and the container stopped; the next start restores them (same PIDs,
same state) instead of booting it."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from providers.lxc_layer import discard
from vbox_cli import proc
from vbox_cli.errors import VboxError

CHECKPOINT = "checkpoint"  # a suspended container's processes, saved by CRIU (lxc-checkpoint)

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
        errors = [line for line in (log.read_text(errors="replace").splitlines() if log.exists() else [])
                  if "Error" in line]
        discard(target)
        raise VboxError(f"{name}: CRIU could not checkpoint it: "
                        f"{(errors[-1] if errors else result.stderr.strip() or 'lxc-checkpoint failed')}")


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
