"""Subordinate ids (/etc/subuid, /etc/subgid): the host ids an unprivileged container's
ids map to.

An unprivileged LXC machine's root is not this host's root: its ids 0..65535 are host ids
BASE..BASE+65535, a range this host has given its user in /etc/subuid and /etc/subgid
(`name:first:count` lines, shadow-utils' format, the files useradd and usermod write).
Root's containers take root's range. vbox does not pick ids of its own: a range written
there is one that useradd will not hand to a new user, and that another tool reading the
files (LXC for a user, podman) sees as taken. `env doctor --fix` gives root a range when
it has none: the first 65536 ids above every range the files hold, and not below 1000000.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from vbox_cli.errors import VboxError

SUBUID, SUBGID = Path("/etc/subuid"), Path("/etc/subgid")
COUNT = 65536  # ids 0..65535 in the machine: every id a Debian system uses (nobody is 65534)
FIRST = 1000000  # where doctor's new ranges begin at the lowest: above useradd's 100000-based ones


@dataclass(frozen=True)
class IdRange:
    """The ids of an unprivileged machine: its 0..count-1 are the host's uid..uid+count-1
    (and gid..gid+count-1)."""

    uid: int
    gid: int
    count: int = COUNT

    def lines(self) -> str:
        """How the machine's folder records it (and LXC's `lxc.idmap` takes it)."""
        return f"u 0 {self.uid} {self.count}\ng 0 {self.gid} {self.count}\n"

    @classmethod
    def parse(cls, text: str) -> "IdRange":
        found = {}
        for line in text.splitlines():
            kind, inside, outside, count = line.split()
            if inside != "0" or int(count) < COUNT or kind not in "ug" or kind in found:
                raise ValueError(f"not an id range of vbox: {line!r}")
            found[kind] = (int(outside), int(count))
        if set(found) != {"u", "g"}:
            raise ValueError("an id range needs a u line and a g line")
        return cls(found["u"][0], found["g"][0], min(found["u"][1], found["g"][1]))

    def shift(self, uid: int, gid: int) -> tuple[int, int]:
        """The host's ids of the machine's (uid, gid)."""
        return self.uid + uid, self.gid + gid


BOX_USER = 1000  # a box's user (vbox's recipes' and Vagrant's): a normal user's own ids in her machines


@dataclass(frozen=True)
class UserMap:
    """The ids of a normal user's LXC machines: their root is her subordinate id BOX_USER-1,
    their user (BOX_USER) is her own uid and primary gid, the others are her subordinate ids
    in order. The files the machine's user makes in a synced folder are hers, hers are its
    user's inside, and the machine's root is not her. The map her box builds use (`unshare
    --map-auto --map-root-user`: 0 her, n subordinate n-1) with 0 and BOX_USER swapped, as
    the builds swap them in her trees (boxes/userns.hand_over)."""

    ids: IdRange
    uid: int
    gid: int

    def ranges(self, kind: str) -> list[tuple[int, int, int]]:
        """(inside, outside, count) of uids ("u") or gids ("g")."""
        first, own = (self.ids.uid, self.uid) if kind == "u" else (self.ids.gid, self.gid)
        return [(0, first + BOX_USER - 1, 1), (1, first, BOX_USER - 1), (BOX_USER, own, 1),
                (BOX_USER + 1, first + BOX_USER, COUNT - 1 - BOX_USER)]

    def lxc_lines(self) -> list[str]:
        """As LXC's `lxc.idmap` takes it."""
        return [f"{kind} {inside} {outside} {count}" for kind in "ug" for inside, outside, count in self.ranges(kind)]

    def usernsexec_args(self) -> list[str]:
        """As lxc-usernsexec's -m options take it."""
        return [arg for kind in "ug" for inside, outside, count in self.ranges(kind)
                for arg in ("-m", f"{kind}:{inside}:{outside}:{count}")]

    def host_uid(self, inside: int) -> int:
        for first, outside, count in self.ranges("u"):
            if first <= inside < first + count:
                return outside + inside - first
        raise ValueError(f"uid {inside} is not mapped")


def user_map(uid: int | None = None, gid: int | None = None) -> UserMap:
    """This user's map (the subordinate ids she must have: `required`)."""
    return UserMap(required(uid), os.getuid() if uid is None else uid, os.getgid() if gid is None else gid)


def entries(path: Path) -> list[tuple[str, int, int]]:
    """(owner, first, count) of each well-formed line; others are skipped, as shadow-utils does."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    found = []
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
            found.append((fields[0], int(fields[1]), int(fields[2])))
    return found


def _names(uid: int) -> set[str]:
    """A user appears in the files by name or by number."""
    names = {str(uid)}
    try:
        names.add(pwd.getpwuid(uid).pw_name)
    except KeyError:
        pass
    return names


def first_range(path: Path, uid: int) -> int | None:
    """The first id of the user's first range of at least COUNT ids, if it has one."""
    names = _names(uid)
    return next((first for owner, first, count in entries(path) if owner in names and count >= COUNT), None)


def of_user(uid: int | None = None, subuid: Path = SUBUID, subgid: Path = SUBGID) -> IdRange | None:
    """The range the user (this process's by default) may give its unprivileged machines."""
    uid = os.geteuid() if uid is None else uid
    first_uid, first_gid = first_range(subuid, uid), first_range(subgid, uid)
    if first_uid is None or first_gid is None:
        return None
    return IdRange(first_uid, first_gid)


def required(uid: int | None = None) -> IdRange:
    """The user's range, or the error that says how to get one."""
    found = of_user(uid)
    if found is None:
        raise VboxError(f"unprivileged LXC machines need {COUNT} subordinate ids for "
                        f"{pwd.getpwuid(os.geteuid() if uid is None else uid).pw_name} in {SUBUID} and {SUBGID}",
                        hint="`env doctor --fix` adds a range")
    return found


def free_start(*paths: Path) -> int:
    """The first id at or above FIRST, aligned to COUNT, beyond every range of the files."""
    end = max([first + count for path in paths for _, first, count in entries(path)] + [FIRST])
    return -(-end // COUNT) * COUNT


def allocate(user: str = "root", subuid: Path = SUBUID, subgid: Path = SUBGID) -> IdRange:
    """Give `user` a range of COUNT ids in both files (the same numbers in each), unless it
    has one; returns its range."""
    uid = pwd.getpwnam(user).pw_uid
    if (found := of_user(uid, subuid, subgid)) is not None:
        return found
    start = free_start(subuid, subgid)
    for path in (subuid, subgid):
        if first_range(path, uid) is None:
            text = path.read_text() if path.exists() else ""
            with open(path, "a") as f:
                f.write(("" if not text or text.endswith("\n") else "\n") + f"{user}:{start}:{COUNT}\n")
            os.chmod(path, 0o644)
    found = of_user(uid, subuid, subgid)
    assert found is not None
    return found
