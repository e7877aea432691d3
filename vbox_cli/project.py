"""A project: its identity, its .vbox/ folder (state, keys, console logs) and its lock.

The project id is derived from the project folder's real path, so it is stable and two
projects never collide; every object vbox makes is named from it. The hypervisor is the
source of truth for what exists; .vbox/state.json holds only what it cannot hold: which
steps ran, the box digest each machine was made from, SSH host keys, addresses.

.vbox/ may come with a repository vbox did not write (git can commit a symlink named
.vbox, or files inside it). So vbox makes it itself, 0700; refuses it when it is a
symlink or not a folder; never follows a symlink inside it (every file is written by an
atomic rename, read with O_NOFOLLOW); and reads the state strictly: a state it cannot
understand stops the command, since acting on a wrong state could destroy machines.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vbox_cli.errors import VboxError
from vbox_cli.paths import STATE_DIR
from vbox_cli.projectid import project_id  # noqa: F401 - the project's id, here for its users

STATE_FILE = "state.json"
STATE_FORMAT = 1
CLIENT_KEY = "id_ed25519"
KNOWN_HOSTS = "known_hosts"
CONSOLE_DIR = "console"
MAX_STATE = 16 * 1024**2


class StateError(VboxError):
    pass


@dataclass
class Project:
    folder: Path
    id: str
    state_dir: Path
    _state_lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @classmethod
    def at(cls, folder: Path) -> "Project":
        folder = folder.resolve()
        return cls(folder=folder, id=project_id(folder), state_dir=folder / STATE_DIR)

    def object_name(self, machine: str) -> str:
        return f"vbox-{self.id}-{machine}"

    def host_name(self, machine: str) -> str:
        """The machine's name from this host (providers/hostnames.py)."""
        return f"{machine}.{self.id}.vbox"

    # -- .vbox/ --------------------------------------------------------------------
    def _checked_dir(self) -> bool:
        """Whether .vbox/ exists; refuses one that is a symlink or not a folder."""
        try:
            info = os.lstat(self.state_dir)
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
            what = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a folder"
            raise VboxError(f"{self.state_dir} is {what}; vbox keeps its own files there and will not follow it",
                            hint=f"remove it (`rm {self.state_dir}`); vbox makes its own")
        return True

    def ensure_dir(self, sub: str | None = None) -> Path:
        """.vbox/ (or a folder in it), made by vbox, 0700, never through a symlink."""
        if not self._checked_dir():
            os.mkdir(self.state_dir, 0o700)
        os.chmod(self.state_dir, 0o700, follow_symlinks=False)
        if sub is None:
            return self.state_dir
        path = self.state_dir / sub
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                raise VboxError(f"{path} is not a folder vbox made", hint=f"remove it (`rm {path}`)") from None
        return path

    def remove_state_dir(self) -> None:
        import shutil

        if self._checked_dir():
            shutil.rmtree(self.state_dir)  # does not follow symlinks inside

    def console_log(self, machine: str, make: bool = True) -> Path:
        """Where a machine's console is logged (KVM: by libvirt's virtlogd)."""
        if make:
            return self.ensure_dir(CONSOLE_DIR) / f"{machine}.log"
        return self.state_dir / CONSOLE_DIR / f"{machine}.log"

    # -- lock ------------------------------------------------------------------
    def lock(self, on_wait: Callable[[], None] | None = None):
        """Two env commands in one project never interleave: the second waits. The lock
        is on the project folder itself, so that `destroy` can remove .vbox/ while it
        holds it."""
        from vbox_cli.locks import exclusive

        return exclusive(self.folder, on_wait)

    # -- state -----------------------------------------------------------------
    def load_state(self) -> dict:
        path = self.state_dir / STATE_FILE
        if not self._checked_dir():
            return {"format": STATE_FORMAT, "machines": {}}
        from vbox_cli.files import read_regular

        try:
            data = read_regular(path, MAX_STATE)
        except FileNotFoundError:
            return {"format": STATE_FORMAT, "machines": {}}
        except OSError as exc:
            raise self._bad_state(f"cannot be read ({exc.strerror or exc})") from None
        try:
            state = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise self._bad_state(f"is not valid JSON ({exc})") from None
        problem = _state_problem(state)
        if problem:
            raise self._bad_state(problem)
        state.setdefault("format", STATE_FORMAT)
        return state

    def _bad_state(self, problem: str) -> StateError:
        return StateError(f"{self.state_dir / STATE_FILE} {problem}; vbox cannot tell which machines this project "
                          "has, so it changed nothing",
                          hint="restore the file, or move it away and run `env destroy` (machines vbox made are "
                               "found by their own markers)")

    def update_state(self, change: Callable[[dict], None]) -> dict:
        """Read, change and write the state atomically and durably (threads of one run share it)."""
        from vbox_cli.files import atomic_write

        with self._state_lock:
            state = self.load_state()
            change(state)
            state["format"] = STATE_FORMAT
            state["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self.ensure_dir()
            atomic_write(self.state_dir / STATE_FILE, json.dumps(state, indent=2, sort_keys=True) + "\n", 0o600)
            return state

    def machine_state(self, name: str) -> dict:
        return self.load_state()["machines"].get(name, {})

    def set_machine(self, name: str, **values) -> None:
        self.update_state(lambda s: s["machines"].setdefault(name, {}).update(values))

    def forget_machine(self, name: str) -> None:
        self.update_state(lambda s: s["machines"].pop(name, None))

    # -- keys ------------------------------------------------------------------
    @property
    def client_key(self) -> Path:
        return self.state_dir / CLIENT_KEY

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / KNOWN_HOSTS

    def ensure_client_key(self) -> str:
        """The project's own SSH key pair (0600); returns the public key line."""
        from vbox_cli.files import atomic_write, read_regular
        from vbox_cli.sshkeys import new_ed25519

        public = self.client_key.with_suffix(".pub")
        with self._state_lock:
            self.ensure_dir()
            try:
                if stat.S_ISREG(os.lstat(self.client_key).st_mode):
                    os.chmod(self.client_key, 0o600)  # whatever mode it was left with
                    return read_regular(public, 64 * 1024).decode().strip()
            except (FileNotFoundError, OSError, UnicodeDecodeError):
                pass
            private_text, public_text = new_ed25519(f"vbox {self.id}")
            atomic_write(self.client_key, private_text, 0o600)
            atomic_write(public, public_text + "\n", 0o644)
            return public_text

    def write_known_hosts(self) -> None:
        """One line per machine: its object name and address, its host key."""
        from vbox_cli.files import atomic_write

        with self._state_lock:
            lines = []
            for name, machine in sorted(self.load_state()["machines"].items()):
                key, address, port = machine.get("host_key"), machine.get("address"), machine.get("port", 22)
                if key and address:
                    where = address if port == 22 else f"[{address}]:{port}"
                    lines.append(f"{self.object_name(name)},{self.host_name(name)},{where} {key}")
            if lines or os.path.lexists(self.known_hosts):
                self.ensure_dir()
                atomic_write(self.known_hosts, "".join(f"{line}\n" for line in lines), 0o600)


_RECORD_TYPES = {"address": str, "port": int, "user": str, "host_key": str, "address_index": int,
                 "provisioned": list, "provider": str, "box": str, "box_version": str, "box_digest": str,
                 "host": str, "network": str, "snapshots": dict, "migrated_to": str}


def _state_problem(state) -> str | None:
    """What is wrong with a state read from disk, or None. Older vbox versions wrote no
    format number: their shape is the same."""
    if not isinstance(state, dict):
        return "is not a JSON object"
    if state.get("format", STATE_FORMAT) != STATE_FORMAT:
        return f"has format {state.get('format')!r}, which this vbox does not know (it knows {STATE_FORMAT})"
    machines = state.get("machines", {})
    if not isinstance(machines, dict):
        return "has no table of machines"
    state.setdefault("machines", machines)
    for name, record in machines.items():
        if not isinstance(record, dict):
            return f"has a record of {name!r} that is not an object"
        for key, kind in _RECORD_TYPES.items():
            value = record.get(key)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                return f"has a record of {name!r} whose {key!r} is not a {kind.__name__}"
        if not all(isinstance(step, str) for step in record.get("provisioned", [])):
            return f"has a record of {name!r} whose 'provisioned' is not a list of step ids"
    if not isinstance(state.get("network", {}), dict):
        return "has a 'network' that is not an object"
    return None
