"""User namespaces kept in a file, for idmapped mounts (a synced folder's owners).

An idmapped mount shows a file owned on disk by uid D as the uid that D maps to in the
mount's user namespace, and stores a write by uid U as the D that maps to U. So the map
of a synced folder sends the project folder's owner to the machine's user, and the
machine's root to nobody on the host where the owner is root (ids map one to one).

The namespace is made by a child process (unshare(CLONE_NEWUSER)) whose maps this root
process writes, and kept after the child ends by a bind mount of /proc/PID/ns/user onto
a file: LXC takes that file as `idmap=` of a mount entry. It is needed only while LXC
sets the mounts up (an idmapped mount holds its own reference to its namespace), so it
is made before each start and released after it: nothing stays mounted in between.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from vbox_cli.errors import VboxError

CLONE_NEWUSER = 0x10000000
NOBODY = 65534


def maps(owner: int, machine_user: int, base: int = 0) -> str:
    """uid_map (or gid_map) lines, "ON-DISK SEEN 1": the project folder's owner is the
    machine's user; the machine's root writes as root, or as nobody where the owner is root.
    SEEN is a host id: the machine's own id plus `base`, the first host id of an
    unprivileged machine's range (0 for a privileged one)."""
    if owner == machine_user and base == 0:
        return ""
    lines = [f"{owner} {base + machine_user} 1"]
    if machine_user != 0:
        lines.append(f"{NOBODY if owner == 0 else 0} {base} 1")
    return "\n".join(lines) + "\n"


def folder_maps(spec, base: tuple[int, int] = (0, 0)) -> tuple[str, str]:
    """(uid_map, gid_map) of a machine's synced folders' idmapped mounts; ("", "") when
    none is needed (no folder, or the project folder's owner is the box's user in a
    privileged machine). `base`: the first host (uid, gid) of an unprivileged machine."""
    from providers.guest import user_ids

    if not spec.folders:
        return "", ""
    user_uid, user_gid = user_ids(spec.box, spec.user)
    owner_uid, owner_gid = spec.folder_owner
    if (owner_uid, owner_gid) == (user_uid, user_gid) and base == (0, 0):
        return "", ""
    identity = "0 0 4294967295\n"
    return maps(owner_uid, user_uid, base[0]) or identity, maps(owner_gid, user_gid, base[1]) or identity


def is_namespace_file(path: Path) -> bool:
    """Whether `path` is a user namespace bind-mounted there (nsfs), not a plain file."""
    target = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == target and " nsfs " in line for line in f)
    except OSError:
        return False


def release(path: Path) -> None:
    """Unmount and remove a namespace file (mounts made with it keep their mapping)."""
    from vbox_cli import proc

    if is_namespace_file(path):
        proc.run(["umount", "-l", str(path)], check=False)
    path.unlink(missing_ok=True)


def ensure(path: Path, uid_map: str, gid_map: str) -> None:
    """A user namespace with these maps, kept at `path` (made again if it is not there)."""
    from vbox_cli import proc

    if is_namespace_file(path):
        return
    path.touch(mode=0o600, exist_ok=True)
    libc = ctypes.CDLL(None, use_errno=True)
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    child = os.fork()
    if child == 0:  # the child: a new user namespace, kept open until the parent has it
        try:
            os.close(ready_r)
            os.close(done_w)
            ok = libc.unshare(CLONE_NEWUSER) == 0
            os.write(ready_w, b"1" if ok else b"0")
            os.read(done_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise VboxError("cannot make a user namespace for a synced folder's owners",
                            hint="the kernel must allow user namespaces (sysctl user.max_user_namespaces)")
        for name, text in (("uid_map", uid_map), ("setgroups", "deny"), ("gid_map", gid_map)):
            with open(f"/proc/{child}/{name}", "w") as f:
                f.write(text)
        proc.run(["mount", "--bind", f"/proc/{child}/ns/user", str(path)])
    finally:
        os.write(done_w, b"x")
        os.close(done_w)
        os.close(ready_r)
        os.waitpid(child, 0)


# x86_64 system calls of the new mount API (Linux 5.12+ for idmapped mounts)
_SYS_OPEN_TREE, _SYS_MOUNT_SETATTR = 428, 442
_OPEN_TREE_CLONE, _AT_EMPTY_PATH, _AT_RECURSIVE = 1, 0x1000, 0x8000
_MOUNT_ATTR_IDMAP = 0x00100000


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


def can_idmap(source: Path, namespace: Path) -> str | None:
    """None if `source`'s file system takes an idmapped mount; else why not. Tried on a
    detached copy of its mount, which goes when its descriptor is closed."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    tree = libc.syscall(_SYS_OPEN_TREE, -100, str(source).encode(), _OPEN_TREE_CLONE | os.O_CLOEXEC)
    if tree < 0:
        return os.strerror(ctypes.get_errno())
    try:
        userns = os.open(namespace, os.O_RDONLY | os.O_CLOEXEC)
        try:
            attr = _MountAttr(_MOUNT_ATTR_IDMAP, 0, 0, userns)
            if libc.syscall(_SYS_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH, ctypes.byref(attr),
                            ctypes.sizeof(attr)) < 0:
                return os.strerror(ctypes.get_errno())
        finally:
            os.close(userns)
    finally:
        os.close(tree)
    return None


_SYS_MOVE_MOUNT, _MOVE_MOUNT_F_EMPTY_PATH, _MOUNT_ATTR_RDONLY = 429, 0x4, 0x1


def mount_idmapped(source: Path, target: Path, namespace: Path, readonly: bool = True) -> None:
    """`source` mounted again at `target`, its owners seen through the user namespace kept
    at `namespace` (an unprivileged machine's box tree: the box's root, 0 on disk, seen as
    the machine's first host id). The mount stays after the namespace file is released."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    tree = libc.syscall(_SYS_OPEN_TREE, -100, str(source).encode(), _OPEN_TREE_CLONE | os.O_CLOEXEC)
    if tree < 0:
        raise VboxError(f"cannot mount {source} with its owners mapped: {os.strerror(ctypes.get_errno())}")
    try:
        userns = os.open(namespace, os.O_RDONLY | os.O_CLOEXEC)
        try:
            attr = _MountAttr(_MOUNT_ATTR_IDMAP | (_MOUNT_ATTR_RDONLY if readonly else 0), 0, 0, userns)
            if libc.syscall(_SYS_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH, ctypes.byref(attr),
                            ctypes.sizeof(attr)) < 0:
                raise VboxError(f"cannot mount {source} with its owners mapped: {os.strerror(ctypes.get_errno())}",
                                hint="its file system must take idmapped mounts (ext4, xfs, btrfs; Linux 5.19+)")
        finally:
            os.close(userns)
        if libc.syscall(_SYS_MOVE_MOUNT, tree, b"", -100, str(target).encode(), _MOVE_MOUNT_F_EMPTY_PATH) < 0:
            raise VboxError(f"cannot mount {source} at {target}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(tree)
