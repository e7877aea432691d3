"""Running a command of the project on this host, the way host triggers and Ansible
steps do: as the user who ran env (under sudo, the one who called it, never root for
them), its output streamed line by line."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vbox_cli.errors import VboxError


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    name: str
    home: str

    @property
    def other(self) -> bool:
        """Not the user this process runs as (env ran through sudo)."""
        return self.uid != os.getuid()


def invoking_user() -> User:
    """The user who ran env: under sudo, the one who called sudo, not root."""
    import pwd

    uid = os.getuid()
    sudo_uid = os.environ.get("SUDO_UID", "")
    if os.geteuid() == 0 and sudo_uid.isdigit() and int(sudo_uid) != 0:
        uid = int(sudo_uid)
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        raise VboxError(f"user {uid}, who ran env, has no account here: a command for the host cannot run as it") \
            from None
    return User(uid, entry.pw_gid, entry.pw_name, entry.pw_dir)


def environment(user: User, extra: dict[str, str]) -> dict[str, str]:
    """The caller's environment (vbox's own variables left out), the user's identity when
    it is another, and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBOX_")}
    if user.other:
        env.update(HOME=user.home, USER=user.name, LOGNAME=user.name)
    env.update(extra)
    return env


def run(argv: list[str], cwd: Path, user: User, env: dict[str, str], on_line: Callable[[str], None]) -> int:
    """Run `argv` as `user`; each line of its output (stderr with stdout) to on_line;
    returns its exit status."""
    as_user = {"user": user.uid, "group": user.gid, "extra_groups": os.getgrouplist(user.name, user.gid)} \
        if user.other else {}
    try:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, **as_user)
    except OSError as exc:
        raise VboxError(f"{argv[0]} could not start: {exc.strerror}") from None
    with process:
        for raw in process.stdout:
            on_line(raw.decode(errors="replace").rstrip("\n"))
    return process.wait()
