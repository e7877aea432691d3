"""Names of the machines from this host: `web.<project>.vbox`.

Every resolver that goes through glibc reads /etc/hosts first (NSS `files`), with or
without systemd-resolved, so vbox keeps one marked block per project there:

    # vbox <project-id> begin (written by vbox; `env destroy` removes it)
    10.101.7.2	web.<project-id>.vbox
    # vbox <project-id> end

Only names of the project's own domain go in, from validated machine names and
addresses vbox chose; the rest of the file is kept as it was. Writes are serialised by
a lock and replace the file atomically, or (where /etc/hosts is a bind mount that
cannot be replaced) rewrite it in place.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

HOSTS = Path("/etc/hosts")
LOCK = Path("/run/vbox-hosts.lock")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def domain(project_id: str) -> str:
    return f"{project_id}.vbox"


def _markers(project_id: str) -> tuple[str, str]:
    return (f"# vbox {project_id} begin (written by vbox; `env destroy` removes it)", f"# vbox {project_id} end")


def _without(text: str, project_id: str) -> list[str]:
    begin, end = _markers(project_id)
    lines, skipping = [], False
    for line in text.splitlines():
        if line == begin:
            skipping = True
        elif skipping and line == end:
            skipping = False
        elif not skipping:
            lines.append(line)
    return lines


def set_names(project_id: str, addresses: dict[str, str], hosts: Path = HOSTS) -> None:
    """The project's block: one line per machine (name -> address); none: no block."""
    from vbox_cli.locks import exclusive

    if not _LABEL.fullmatch(project_id.replace(".", "-")):
        raise ValueError(f"not a project id: {project_id!r}")
    entries = []
    for name, address in sorted(addresses.items()):
        if not _LABEL.fullmatch(name):
            raise ValueError(f"not a machine name: {name!r}")
        entries.append(f"{ipaddress.IPv4Address(address)}\t{name}.{domain(project_id)}")
    with exclusive(LOCK if hosts == HOSTS else hosts.with_suffix(".lock")):
        current = hosts.read_text() if hosts.exists() else ""
        lines = _without(current, project_id)
        if entries:
            begin, end = _markers(project_id)
            lines += [begin, *entries, end]
        text = "\n".join(lines) + "\n"
        if text != current:
            _write(hosts, text)


def remove(project_id: str, hosts: Path = HOSTS) -> None:
    set_names(project_id, {}, hosts)


def _write(hosts: Path, text: str) -> None:
    from vbox_cli.files import atomic_write

    mode = hosts.stat().st_mode & 0o777 if hosts.exists() else 0o644
    try:
        atomic_write(hosts, text, mode)
    except OSError:  # /etc/hosts bind-mounted (a container): rewrite it where it is
        with open(hosts, "r+") as f:
            f.write(text)
            f.truncate()
            f.flush()
            os.fsync(f.fileno())


def leaks(project_id: str | None, hosts: Path = HOSTS) -> list[str]:
    try:
        text = hosts.read_text()
    except OSError:
        return []
    found = re.findall(r"^# vbox (\S+) begin", text, re.MULTILINE)
    return [f"/etc/hosts block of project {p}" for p in found if project_id is None or p == project_id]
