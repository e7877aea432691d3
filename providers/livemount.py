"""Synced folders into a running container, with the new mount API (Linux 5.12+); and
the mounts that KVM machines' virtiofsd serve (providers/virtiofs.py).

The mount is made in this host's mount namespace (`open_tree` clones the folder's mount,
`mount_setattr` idmaps it and makes it read-only where asked), then a child process
enters the container's mount namespace (`setns`) and moves it into place
(`move_mount`). Removing one is a lazy unmount from inside the same namespace. A forked
child, because `setns` into a mount namespace needs a single-threaded process.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from providers.idmap import _MOUNT_ATTR_IDMAP, _OPEN_TREE_CLONE, _SYS_MOUNT_SETATTR, _SYS_OPEN_TREE, _MountAttr
from vbox_cli.errors import VboxError

_SYS_MOVE_MOUNT = 429
_AT_EMPTY_PATH, _AT_RECURSIVE = 0x1000, 0x8000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_RDONLY = 0x1
_CLONE_NEWNS = 0x00020000
_MNT_DETACH = 2


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _in_namespace(pid: int, work) -> None:
    """Run work() in a child that has entered the mount namespace of process `pid`; raise
    what it reports."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        message = b""
        try:
            os.close(read_end)
            libc = _libc()
            ns = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
            if libc.setns(ns, _CLONE_NEWNS) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            work(libc)
        except OSError as exc:
            message = f"{exc.strerror or exc} ({exc.filename or ''})".encode()
        finally:
            os.write(write_end, message)
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(child, 0)
    if message:
        raise VboxError(f"cannot change the mounts of the running machine: {message}")


def clone(source: Path, namespace: Path | None, readonly: bool) -> int:
    """A detached copy of `source`'s mount (a descriptor), idmapped with the user namespace
    at `namespace` (None: as it is) and read-only where asked. It goes when the descriptor
    is closed, unless it was placed somewhere first."""
    libc = _libc()
    tree = libc.syscall(_SYS_OPEN_TREE, -100, str(source).encode(), _OPEN_TREE_CLONE | os.O_CLOEXEC)
    if tree < 0:
        raise VboxError(f"cannot open {source} to share it: {os.strerror(ctypes.get_errno())}")
    try:
        flags = (_MOUNT_ATTR_IDMAP if namespace else 0) | (_MOUNT_ATTR_RDONLY if readonly else 0)
        if flags:
            userns = os.open(namespace, os.O_RDONLY | os.O_CLOEXEC) if namespace else 0
            try:
                attr = _MountAttr(flags, 0, 0, userns)
                if libc.syscall(_SYS_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH, ctypes.byref(attr),
                                ctypes.sizeof(attr)) < 0:
                    raise VboxError(f"cannot map the owners of {source}: {os.strerror(ctypes.get_errno())}")
            finally:
                if namespace:
                    os.close(userns)
    except BaseException:
        os.close(tree)
        raise
    return tree


def _move(libc, tree: int, target: str) -> None:
    if libc.syscall(_SYS_MOVE_MOUNT, tree, b"", -100, target.encode(), _MOVE_MOUNT_F_EMPTY_PATH) < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), target)


def place(tree: int, target: Path) -> None:
    """Mount a detached copy (from `clone`) at `target`, an existing folder of this host."""
    try:
        _move(_libc(), tree, str(target))
    except OSError as exc:
        raise VboxError(f"cannot mount a synced folder at {target}: {exc.strerror}") from None


def unmount(target: Path) -> None:
    """Detach what is mounted at `target` on this host (lazily: users of it keep it)."""
    import errno

    libc = _libc()
    # not os.path.ismount: a bind mount from the same file system has its parent's device
    if libc.umount2(str(target).encode(), _MNT_DETACH) != 0 and ctypes.get_errno() not in (errno.EINVAL,
                                                                                          errno.ENOENT):
        raise VboxError(f"cannot unmount {target}: {os.strerror(ctypes.get_errno())}")


def attach(pid: int, source: Path, target: str, namespace: Path | None, readonly: bool) -> None:
    """Mount `source` at `target` in the container whose init is `pid`."""
    tree = clone(source, namespace, readonly)
    try:
        def place_inside(libc) -> None:
            os.makedirs(target, exist_ok=True)
            _move(libc, tree, target)

        _in_namespace(pid, place_inside)
    finally:
        os.close(tree)


def detach(pid: int, target: str) -> None:
    """Unmount what is at `target` in the container (lazily: open files keep working)."""
    def remove(libc) -> None:
        if os.path.ismount(target) and libc.umount2(target.encode(), _MNT_DETACH) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), target)

    _in_namespace(pid, remove)
