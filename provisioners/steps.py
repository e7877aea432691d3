"""Provisioning steps, run over SSH: shell (inline), script (uploaded), file (uploaded).

Steps run as root (through sudo) unless `privileged = false`. A step's identity is a
hash of its definition and its occurrence, so `run = "once"` steps are recorded per
machine and not repeated, while a new or changed step runs at the next `up`.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path
from typing import Callable

from vbox_cli.envfile.model import ScriptStep, ShellStep
from vbox_cli.errors import VboxError

WORK_DIR = "/tmp/vbox-provision"


class StepFailed(VboxError):
    def __init__(self, machine: str, index: int, summary: str, status: int):
        super().__init__(
            f"{machine}: provisioning step {index + 1} ({summary}) failed with exit status {status}",
            hint=f"the machine stays up for debugging: `env ssh {machine}`; fix the step and run `env provision "
                 f"{machine}`",
        )
        self.machine, self.index, self.status = machine, index, status


def step_ids(steps) -> list[str]:
    ids, seen = [], {}
    for step in steps:
        digest = hashlib.sha256(json.dumps(step.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]
        seen[digest] = seen.get(digest, 0) + 1
        ids.append(f"{digest}-{seen[digest]}")
    return ids


def summary(step) -> str:
    if isinstance(step, ShellStep):
        first = next((line.strip() for line in step.shell.splitlines() if line.strip()), "")
        return f"shell: {first[:60]}"
    if isinstance(step, ScriptStep):
        return f"script: {step.script}"
    return f"file: {step.file} -> {step.to}"


def work_dir(client) -> str:
    """A private folder of the login user for uploaded steps (made once a connection)."""
    from provisioners.ssh import run

    lines: list[str] = []
    status = run(client, f'd={WORK_DIR}-$(id -u) && mkdir -p -m 700 "$d" && echo "$d"', lines.append)
    if status != 0 or not lines:
        raise VboxError("cannot make a folder for provisioning in the machine: " + " ".join(lines))
    return lines[-1].strip()


def run_step(client, work: str, machine: str, index: int, step, project_dir: Path,
             on_line: Callable[[str], None]) -> None:
    """Upload what the step needs into `work` and run it; the upload is removed by the
    same command, whatever the step's exit status."""
    from provisioners.ssh import run, upload

    sudo = "sudo -n -H " if step.privileged else ""
    if isinstance(step, ShellStep):
        path = f"{work}/{index + 1}.sh"
        upload(client, step.shell.encode(), path, 0o700)
        command = f"{sudo}/bin/sh -e {shlex.quote(path)}"
    elif isinstance(step, ScriptStep):
        path = f"{work}/{index + 1}-{Path(step.script).name}"
        upload(client, (project_dir / step.script).read_bytes(), path, 0o700)
        assignments = [f"{key}={value}" for key, value in step.env.items()]
        command = f"{sudo}env {shlex.join(assignments)} {shlex.quote(path)} {shlex.join(step.args)}"
    else:
        path = f"{work}/{index + 1}.file"
        upload(client, (project_dir / step.file).read_bytes(), path, 0o600)
        owner = "-o root -g root " if step.privileged else ""
        command = f"{sudo}install -D -m {step.mode or '0644'} {owner}{shlex.quote(path)} {shlex.quote(step.to)}"
    status = run(client, f"{command}; status=$?; rm -f {shlex.quote(path)}; exit $status", on_line)
    if status != 0:
        raise StepFailed(machine, index, summary(step), status)
