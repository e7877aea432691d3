"""Envfile.lock: what a project got, so that teammates and CI get the same.

Beside the Envfile, in TOML, written by vbox in one stable order (machines and steps in
Envfile order), for diffs in review:

    # Envfile.lock: written by vbox; commit it. `env up --locked` checks it.
    lock_version = 1
    vbox = "0.1.0"

    [machines.web]
    box = "debian-12"
    box_version = "12.0.10"
    box_digest = "sha256:..."
    box_source = "https://boxes.example.org/team/debian-12.json"   # "" when built or imported here
    steps = [
      "shell 3f2a...",        # sha256 of the step's settings and of every project file it reads
    ]

`env up` writes it when there is none and it brings up every machine; `env lock` writes
it on purpose. `env up --locked` compares it with what the Envfile and the box store give
now, before anything is made, and refuses on any difference, naming each.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

from vbox_cli.errors import VboxError

NAME = "Envfile.lock"
FORMAT = 1
EXIT_LOCK_DIFFERS = 1


class LockError(VboxError):
    """The lock is missing, unreadable or differs from what the project gives now."""


def path_of(envfile: Path) -> Path:
    return envfile.with_name(NAME)


def step_hash(step, project_dir: Path) -> str:
    """The step's kind and a sha256 of its settings and of the project files it reads."""
    from provisioners.kinds import files, kind_of
    from provisioners.steps import MAX_UPLOAD
    from vbox_cli.files import project_file, read_regular

    digest = hashlib.sha256(json.dumps(step.model_dump(mode="json"), sort_keys=True).encode())
    for relative in files(step):
        try:
            content = read_regular(project_file(project_dir, relative), MAX_UPLOAD)
        except (ValueError, OSError) as exc:
            raise VboxError(f"{relative}: {exc}", hint="a step's file must be a file of the project") from None
        digest.update(f"\0{relative}\0{len(content)}\0".encode() + content)
    return f"{kind_of(step)} {digest.hexdigest()}"


def compute(loaded, boxes: dict, names: list[str]) -> dict:
    """The lock of these machines (Envfile order) with the boxes they get now."""
    from vbox_cli import __version__

    machines = {}
    for name in [n for n in loaded.machines if n in names]:
        box = boxes[name]
        source = box.meta.source or {}
        machines[name] = {
            "box": box.name, "box_version": box.version, "box_digest": box.digest,
            "box_source": str(source.get("catalog") or source.get("url") or ""),
            "steps": [step_hash(step, loaded.project_dir) for step in loaded.machines[name].provision],
        }
    return {"lock_version": FORMAT, "vbox": __version__, "machines": machines}


def _string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a TOML basic string: the same escapes


def render(lock: dict) -> str:
    lines = ["# Envfile.lock: written by vbox; commit it. `env up --locked` checks it, `env lock` rewrites it.",
             f"lock_version = {lock['lock_version']}", f"vbox = {_string(lock['vbox'])}"]
    for name, machine in lock["machines"].items():
        lines += ["", f"[machines.{_string(name)}]"]
        for key in ("box", "box_version", "box_digest", "box_source"):
            lines.append(f"{key} = {_string(machine[key])}")
        lines.append("steps = [" + "".join(f"\n  {_string(s)}," for s in machine["steps"])
                     + ("\n]" if machine["steps"] else "]"))
    return "\n".join(lines) + "\n"


def read(path: Path) -> dict:
    """The lock, read as a regular file of the project (never through a link: it may come
    from a repository the user did not write)."""
    from vbox_cli.files import read_regular

    try:
        text = read_regular(path, 16 * 1024**2).decode("utf-8", "replace")
    except FileNotFoundError:
        raise LockError(f"{path.name}: there is none", hint="`env lock` writes it (and `env up` when there is "
                                                             "none); commit it") from None
    except OSError as exc:
        raise LockError(f"{path}: {exc.strerror or exc} (a link, or not a regular file?)",
                        hint="`env lock` writes it anew") from None
    try:
        lock = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LockError(f"{path}: not valid TOML ({exc})", hint="`env lock` writes it anew") from None
    if lock.get("lock_version") != FORMAT or not isinstance(lock.get("machines"), dict):
        raise LockError(f"{path}: a lock of another format ({lock.get('lock_version')!r}); this vbox writes "
                        f"{FORMAT}", hint="`env lock` writes it anew")
    return lock


def write(path: Path, lock: dict) -> None:
    from vbox_cli.files import atomic_write

    atomic_write(path, render(lock), 0o644)


def differences(locked: dict, now: dict, names: list[str], everyone: list[str]) -> list[str]:
    """What differs between the lock and now, for the machines `names` (and machines of the
    lock that `everyone`, the Envfile's machines, no longer has): one line each."""
    found = []
    old, new = locked.get("machines", {}), now["machines"]
    for name in names:
        if name not in old:
            found.append(f"{name}: a machine the lock does not have")
            continue
        before, after = old[name], new[name]
        if (before.get("box"), before.get("box_version")) != (after["box"], after["box_version"]):
            found.append(f"{name}: box {after['box']} {after['box_version']}, the lock has "
                         f"{before.get('box')} {before.get('box_version')}")
        elif before.get("box_digest") != after["box_digest"]:
            found.append(f"{name}: box {after['box']} {after['box_version']} is {after['box_digest'][:19]}, "
                         f"the lock has {str(before.get('box_digest'))[:19]} (a box built or imported again)")
        steps_before, steps_after = list(before.get("steps") or []), after["steps"]
        for index in range(max(len(steps_before), len(steps_after))):
            if index >= len(steps_before):
                found.append(f"{name}: step {index + 1} ({steps_after[index].split()[0]}) is not in the lock")
            elif index >= len(steps_after):
                found.append(f"{name}: step {index + 1} of the lock is gone from the Envfile")
            elif steps_before[index] != steps_after[index]:
                found.append(f"{name}: step {index + 1} ({steps_after[index].split()[0]}) changed (its settings "
                             "or a file it reads)")
    found += [f"{name}: in the lock, not in the Envfile" for name in old if name not in everyone]
    return found


def pins(path: Path, machines: dict) -> dict[str, str]:
    """machine -> the box version the lock gives it (where the Envfile names the same box)."""
    lock = read(path)
    return {name: entry["box_version"] for name, entry in lock["machines"].items()
            if name in machines and isinstance(entry, dict) and entry.get("box") == machines[name].box
            and isinstance(entry.get("box_version"), str)}


def check(session, boxes: dict, names: list[str]) -> None:
    """`--locked`: refuse, before anything is made, when anything differs from the lock."""
    from boxes.versions import Constraint

    path = path_of(session.loaded.path)
    locked = read(path)
    found = differences(locked, compute(session.loaded, boxes, names), names, list(session.loaded.machines))
    for name in names:  # the lock's version, pinned, must still be one the Envfile allows
        wanted, entry = session.machines[name].box_version, locked["machines"].get(name) or {}
        if wanted and isinstance(entry.get("box_version"), str) and not Constraint(wanted).allows(entry["box_version"]):
            found.append(f"{name}: box_version {wanted!r} does not allow the lock's {entry['box_version']}")
    if found:
        raise LockError(f"{path.name} does not match the project ({len(found)} difference"
                        f"{'s' if len(found) > 1 else ''}); nothing was made",
                        hint="\n".join(found[:8]) + ("\n..." if len(found) > 8 else "")
                        + "\nif the change is wanted: `env lock` writes the lock anew (commit it)")


def write_if_missing(session, boxes: dict, names: list[str]) -> bool:
    """`up` of every machine with no lock yet: write it. True when written."""
    path = path_of(session.loaded.path)
    if path.exists() or set(names) != set(session.loaded.machines):
        return False
    write(path, compute(session.loaded, boxes, names))
    return True
