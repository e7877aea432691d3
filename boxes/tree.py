"""A box's root tree, walked in one order (byte order of names, a folder's contents
before its next sibling) and summed up in one digest: what an exported tree and an
imported one are compared by."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

XATTRS = ("security.capability", "system.posix_acl_access", "system.posix_acl_default")  # and user.*
CHUNK = 1024 * 1024

def kept_xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    found = {}
    for name in sorted(names):
        if name in XATTRS or name.startswith("user."):
            try:
                found[name] = os.getxattr(path, name, follow_symlinks=False)
            except OSError:
                continue
    return found


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def walk(root: Path):
    """As `_walk`, but depth first: a folder's whole contents before its next sibling."""
    def visit(relative: str):
        folder = root / relative if relative else root
        for name in sorted(os.listdir(folder), key=os.fsencode):
            path = f"{relative}/{name}" if relative else name
            info = os.lstat(root / path)
            yield path, info
            if stat.S_ISDIR(info.st_mode):
                yield from visit(path)

    yield from visit("")


def tree_digest(root: Path) -> str:
    """sha256 over the tree: each entry's path, kind, mode, owner, content (a file's sha256,
    a link's target) and kept attributes. Device nodes and times are left out."""
    total = hashlib.sha256()
    for relative, info in walk(root):
        path = root / relative
        mode = info.st_mode
        if stat.S_ISREG(mode):
            what = "f " + file_sha256(path)
        elif stat.S_ISDIR(mode):
            what = "d"
        elif stat.S_ISLNK(mode):
            what = "l " + base64.b64encode(os.fsencode(os.readlink(path))).decode()
        else:
            continue  # devices, FIFOs, sockets
        xattrs = ",".join(f"{k}={base64.b64encode(v).decode()}" for k, v in kept_xattrs(str(path)).items())
        name = base64.b64encode(os.fsencode(relative)).decode()
        total.update(f"{name} {what} {stat.S_IMODE(mode):o} {info.st_uid} {info.st_gid} {xattrs}\n".encode())
    return total.hexdigest()


def resolve(root: Path, relative: str, hops: int = 40) -> Path | None:
    """The path of `relative` in the tree at `root`, its links followed as the machine
    would (an absolute target from the tree's top), never out of the tree; None when it
    is not there."""
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    done: list[str] = []
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        path = root.joinpath(*done, part)
        try:
            info = os.lstat(path)
        except OSError:
            return None
        if stat.S_ISLNK(info.st_mode):
            hops -= 1
            if hops < 0:
                return None
            target = os.readlink(path)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        done.append(part)
    return root.joinpath(*done)
