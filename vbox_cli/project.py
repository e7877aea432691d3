"""A project: its identity, its .vbox/ folder (state, keys, lock).

The project id is derived from the project folder's real path, so it is stable and two
projects never collide; every object vbox makes is named from it. The hypervisor is the
source of truth for what exists; .vbox/state.json holds only what it cannot hold: which
steps ran, the box digest each machine was made from, SSH host keys, addresses.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vbox_cli.paths import STATE_DIR

STATE_FILE = "state.json"
LOCK_FILE = "lock"
CLIENT_KEY = "id_ed25519"
KNOWN_HOSTS = "known_hosts"


def project_id(folder: Path) -> str:
    """`<slug>-<hash>`: the folder's name, cut to [a-z0-9], and 6 hex of its real path."""
    real = os.path.realpath(folder)
    slug = re.sub(r"[^a-z0-9]+", "-", Path(real).name.lower()).strip("-")[:12].strip("-") or "project"
    return f"{slug}-{hashlib.sha256(real.encode()).hexdigest()[:6]}"


@dataclass
class Project:
    folder: Path
    id: str
    state_dir: Path
    _state_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def at(cls, folder: Path) -> "Project":
        folder = folder.resolve()
        return cls(folder=folder, id=project_id(folder), state_dir=folder / STATE_DIR)

    def object_name(self, machine: str) -> str:
        return f"vbox-{self.id}-{machine}"

    # -- lock ------------------------------------------------------------------
    def lock(self, on_wait: Callable[[], None] | None = None):
        """Two env commands in one project never interleave: the second waits."""
        from vbox_cli.locks import exclusive

        return exclusive(self.state_dir / LOCK_FILE, on_wait)

    # -- state -----------------------------------------------------------------
    def load_state(self) -> dict:
        try:
            state = json.loads((self.state_dir / STATE_FILE).read_text())
        except (OSError, ValueError):
            state = {}
        state.setdefault("machines", {})
        return state

    def update_state(self, change: Callable[[dict], None]) -> dict:
        """Read, change and write the state atomically (threads of one run share it)."""
        with self._state_lock:
            state = self.load_state()
            change(state)
            state["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self.state_dir.mkdir(exist_ok=True)
            tmp = self.state_dir / f".{STATE_FILE}.{os.getpid()}.{threading.get_ident()}"
            tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, self.state_dir / STATE_FILE)
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
        from vbox_cli.sshkeys import new_ed25519

        public = self.client_key.with_suffix(".pub")
        if not (self.client_key.exists() and public.exists()):
            self.state_dir.mkdir(exist_ok=True)
            private_text, public_text = new_ed25519(f"vbox {self.id}")
            write_private(self.client_key, private_text)
            public.write_text(public_text + "\n")
        return public.read_text().strip()

    def write_known_hosts(self) -> None:
        """One line per machine: its object name and address, its host key."""
        with self._state_lock:
            lines = []
            for name, machine in sorted(self.load_state()["machines"].items()):
                key, address, port = machine.get("host_key"), machine.get("address"), machine.get("port", 22)
                if key and address:
                    where = address if port == 22 else f"[{address}]:{port}"
                    lines.append(f"{self.object_name(name)},{where} {key}")
            if lines or self.known_hosts.exists():
                self.state_dir.mkdir(exist_ok=True)
                tmp = self.known_hosts.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text("".join(f"{line}\n" for line in lines))
                os.replace(tmp, self.known_hosts)


def write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
