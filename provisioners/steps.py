"""Running provisioning steps over one SSH connection, whatever their kind
(provisioners/kinds/).

Steps run as root (through sudo) unless `privileged = false`. A step's identity is a
hash of its definition and its occurrence, so `run = "once"` steps are recorded per
machine and not repeated, while a new or changed step runs at the next `up`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vbox_cli.errors import VboxError

WORK_DIR = "/tmp/vbox-provision"
MAX_UPLOAD = 256 * 1024**2  # a script or file of the project sent to a machine


class StepFailed(VboxError):
    def __init__(self, machine: str, index: int, summary: str, status: int, reason: str | None = None):
        super().__init__(
            f"{machine}: provisioning step {index + 1} ({summary}) failed with exit status {status}"
            + (f": {reason}" if reason else ""),
            hint=f"the machine stays up for debugging: `env ssh {machine}`; fix the step and run `env provision "
                 f"{machine}`",
        )
        self.machine, self.index, self.status = machine, index, status


def step_ids(steps) -> list[str]:
    ids, seen = [], {}
    from vbox_cli.machines.drift import step_id_of

    for step in steps:
        digest = step_id_of(step.model_dump(mode="json"))  # status computes it from the cached settings
        seen[digest] = seen.get(digest, 0) + 1
        ids.append(f"{digest}-{seen[digest]}")
    return ids


def summary(step) -> str:
    from provisioners.kinds import summary as kind_summary

    return kind_summary(step)


@dataclass
class StepContext:
    """What a step kind is given to run one step."""

    conn: object  # provisioners.ssh.Connection: run(command, on_line) -> status; upload(data, path, mode)
    work: str  # a private folder of the login user in the machine
    machine: str
    index: int
    project_dir: Path
    on_line: Callable[[str], None]
    inventory: Callable[[], dict] | None = None  # the project's Ansible inventory (provisioners/ansible.py)

    @staticmethod
    def sudo(step) -> str:
        return "sudo -n -H " if step.privileged else ""

    def read(self, relative: str) -> bytes:
        """A file of the project: it must resolve (symlinks followed) inside the project
        folder and be a regular file."""
        from vbox_cli.files import project_file, read_regular

        try:
            return read_regular(project_file(self.project_dir, relative), MAX_UPLOAD)
        except ValueError as exc:
            raise VboxError(f"{self.machine}: {exc}") from None
        except OSError as exc:
            raise VboxError(f"{self.machine}: cannot read {relative!r}: {exc.strerror or exc}") from None

    def upload(self, data: bytes, name: str, mode: int) -> str:
        path = f"{self.work}/{self.index + 1}-{name}"
        self.conn.upload(data, path, mode)
        return path

    def run(self, command: str, uploaded: str) -> int:
        """Run `command`; the uploaded file goes with the same command, whatever its exit status."""
        return self.conn.run(f"{command}; status=$?; rm -f {shlex.quote(uploaded)}; exit $status", self.on_line)


def work_dir(conn) -> str:
    """A private folder of the login user for uploaded steps (made once a connection)."""
    lines: list[str] = []
    status = conn.run(f'd={WORK_DIR}-$(id -u) && mkdir -p -m 700 "$d" && echo "$d"', lines.append)
    if status != 0 or not lines:
        raise VboxError("cannot make a folder for provisioning in the machine: " + " ".join(lines))
    return lines[-1].strip()


def run_step(ctx: StepContext, step) -> None:
    from provisioners.kinds import kind_of, module

    status = module(kind_of(step)).run(step, ctx)
    if status != 0:
        raise StepFailed(ctx.machine, ctx.index, summary(step), status)
