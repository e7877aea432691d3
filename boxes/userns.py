"""A normal user's box build, in a user namespace of her own.

debootstrap and chroot need root; a user has a root of her own in a user namespace where
her uid is 0 and her subordinate ids (/etc/subuid, /etc/subgid, given by `env doctor --fix
--user NAME`) are 1 to 65535: `unshare --map-auto --map-root-user`, whose id maps
newuidmap and newgidmap (Debian's uidmap) write as the kernel lets them, from those files
only. Her finished tree's owners 0 and 1000 are then swapped (`hand_over`): her LXC
machines see it with their root a subordinate id and their user (1000) her own uid
(providers/subids.UserMap), so the files that user writes in a synced folder are hers. Chosen over mmdebstrap's unshare mode because it is the same debootstrap as root's
build, step for step: the same packages give the same tree, owners included (seen from
inside), and so the same digest whoever built the box. What differs is made the same:
/dev holds no device node in the tree (none can be made in a user namespace), and the
disk image gets the same nodes from debugfs in both builds (boxes/reproducible.py).

The whole `env box build` runs again inside (`VBOX_USERNS=1`), with the user's own
VBOX_HOME and VBOX_CACHE: there its uid is 0, and vbox would take root's store. Nothing
inside can reach beyond what the user can: the namespace gives no right on the host.
Its new mount and PID namespaces let debootstrap mount /proc in the tree, and end every
process of the build with it. A tree of the user's store has files of her subordinate
ids, which she can remove only from such a namespace again (`remove`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

MARK = "VBOX_USERNS"
UNSHARE = ["unshare", "--map-auto", "--map-root-user"]


def inside() -> bool:
    """Whether this process is a user's build in its user namespace."""
    return os.environ.get(MARK) == "1" and os.geteuid() == 0


def missing_tools() -> list[str]:
    from providers.host import which

    return [tool for tool in ("unshare", "newuidmap", "newgidmap") if which(tool) is None]


def unavailable(uid: int | None = None, files: tuple[Path, Path] | None = None) -> str | None:
    """Why this user cannot build in a user namespace of her own; None: she can. `files`:
    other than /etc/subuid and /etc/subgid."""
    from providers import subids

    if missing := missing_tools():
        return f"{' and '.join(missing)} missing (Debian's uidmap package)"
    if subids.of_user(os.getuid() if uid is None else uid, *(files or ())) is None:
        return f"no {subids.COUNT} subordinate ids in /etc/subuid and /etc/subgid"
    return None


def build_command(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command (and its environment) that runs `vbox ARGV` again in a user namespace."""
    from vbox_cli.paths import vbox_cache, vbox_home

    env = {**os.environ, MARK: "1", "VBOX_HOME": str(vbox_home()), "VBOX_CACHE": str(vbox_cache()),
           # debootstrap then binds /dev's nodes into the tree, which it cannot make here
           "container": "lxc",
           "PATH": f"{os.environ.get('PATH', '/usr/bin:/bin')}:/usr/sbin:/sbin"}
    command = [*UNSHARE, "--mount", "--pid", "--fork", "--mount-proc", "--kill-child",
               sys.executable, "-m", "vbox_cli", *argv]
    return command, env


def run(argv: list[str]) -> int:
    """`vbox ARGV` in the user's namespace, its output on this terminal; its exit status.
    It runs in a process group of its own: ^C or SIGTERM here is passed to it as SIGTERM,
    which it unwinds from (a half-built box removed) while this process waits. (unshare
    ignores both while it waits for its child, and kills that child if it dies first.)"""
    import signal
    import subprocess

    command, env = build_command(argv)
    from vbox_cli.proc import _die_with_parent

    # if this process is killed outright, so is the build (its staging is swept by the
    # next): SIGKILL, as unshare ignores SIGTERM while it waits
    process = subprocess.Popen(command, env=env, process_group=0,
                               preexec_fn=lambda: _die_with_parent(signal.SIGKILL))
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:  # SIGINT, or SIGTERM (the CLI raises it for both)
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def hand_over(tree: Path) -> None:
    """A tree built in this namespace made ready for her LXC machines: the files of its
    root (0) made the box user's (BOX_USER) and those of the box user made root's, uids and
    gids alike. Her machines' id map (subids.UserMap) is this namespace's with the same two
    ids swapped, so they see every owner as built. A chown clears set-user-id and
    set-group-id bits and file capabilities: they are set again, each capability for the
    machines' root (a version 3 capability whose root is BOX_USER here). Each inode once
    (hard links). Run inside, after the digest and the disk image were made of the tree."""
    import stat

    from providers.subids import BOX_USER

    swap = {0: BOX_USER, BOX_USER: 0}
    seen: set[int] = set()
    for path in [tree, *tree.rglob("*")]:
        info = os.lstat(path)
        if info.st_ino in seen or (info.st_uid not in swap and info.st_gid not in swap):
            continue
        seen.add(info.st_ino)
        capability = None
        if stat.S_ISREG(info.st_mode):
            try:
                capability = os.getxattr(path, CAPABILITY, follow_symlinks=False)
            except OSError:
                pass
        os.lchown(path, swap.get(info.st_uid, info.st_uid), swap.get(info.st_gid, info.st_gid))
        if stat.S_ISREG(info.st_mode) and info.st_mode & (stat.S_ISUID | stat.S_ISGID):
            os.chmod(path, stat.S_IMODE(info.st_mode))
        if capability is not None:
            os.setxattr(path, CAPABILITY, capability_v3(capability, BOX_USER), follow_symlinks=False)


CAPABILITY = "security.capability"


def capability_v3(value: bytes, rootid: int) -> bytes:
    """A file capability (struct vfs_cap_data, version 2 or 3) as version 3 for `rootid`."""
    import struct

    magic = struct.unpack_from("<I", value)[0]
    revision = magic & 0xFF000000
    if revision not in (0x02000000, 0x03000000) or len(value) < 20:
        raise ValueError(f"not a version 2 or 3 file capability: {value.hex()}")
    return struct.pack("<I", 0x03000000 | (magic & 0x00FFFFFF)) + value[4:20] + struct.pack("<I", rootid)


def remove(path: Path) -> None:
    """A tree of the user's store removed from her user namespace, where the files of her
    subordinate ids are hers. `--one-file-system`: never into a mount under it."""
    from vbox_cli import proc

    proc.run([*UNSHARE, "rm", "-rf", "--one-file-system", "--", str(path)], timeout=600)
