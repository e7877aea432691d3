"""An unprivileged LXC machine's root: an overlay on its box tree, the tree's owners seen
in the machine's id range (providers/subids.py); and its synced folders, staged.

LXC's own overlay driver cannot map a box tree's owners (its idmapped root takes a plain
folder only: "Idmapped rootfs currently only supports the dir storage driver"), so vbox
mounts the overlay and gives LXC that folder (`lxc.rootfs.path = dir:...`). The box tree is
mounted idmapped (its root, 0 on disk, seen as the machine's first host id): the box is
shared by every machine, copied for none. The mounts are made for a start and detached from
this host right after it: the container keeps its copy (they are private, so the
detaching does not reach it), and a machine that stops by itself leaves nothing mounted
here.
"""

from __future__ import annotations

from pathlib import Path

from providers.lxc_layer import LAYER
from providers.lxc_config import LOWER, ROOTFS, SHARES, UPPER, staged
from vbox_cli import proc
from vbox_cli.errors import VboxError

ROOT_IDMAP = "idmap-root"  # the user namespace that maps the box tree (while it is mounted)


def mount_root(folder: Path, box_tree: Path, ids) -> None:
    """The machine's root at folder/rootfs: an overlay of its upper layer on the box tree
    mounted idmapped at folder/lower."""
    from providers import idmap

    unmount_root(folder)  # a start cut short
    lower, rootfs, upper, work = folder / LOWER, folder / ROOTFS, folder / UPPER, folder / LAYER / "work"
    for path in (lower, rootfs, work):
        path.mkdir(exist_ok=True)
    if any(c in str(p) for p in (lower, upper, work) for c in ",:"):
        raise VboxError(f"{folder}: an unprivileged machine's path cannot hold ',' or ':' (overlayfs options)")
    namespace = folder / ROOT_IDMAP
    try:
        idmap.ensure(namespace, f"0 {ids.uid} {ids.count}\n", f"0 {ids.gid} {ids.count}\n")
        idmap.mount_idmapped(box_tree, lower, namespace)
    finally:
        idmap.release(namespace)
    proc.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}",
              str(rootfs)], timeout=60)
    proc.run(["mount", "--make-private", str(rootfs)], timeout=60)


def stage_folders(folder: Path, shares) -> None:
    """Each synced folder bind-mounted under the machine's folder, where LXC (as the
    machine's root) can reach it (lxc_config.staged)."""
    for share in shares:
        stage = staged(folder, share.source)
        stage.mkdir(parents=True, exist_ok=True)
        proc.run(["mount", "--bind", str(share.source), str(stage)], timeout=60)
        proc.run(["mount", "--make-private", str(stage)], timeout=60)


def unmount_root(folder: Path) -> None:
    """What mount_root and stage_folders mounted, detached; the staged folders' places gone."""
    # from mountinfo: os.path.ismount cannot tell a bind mount on the same file system
    from boxes.store import discard, mounts_under

    for path in (folder / ROOTFS, folder / LOWER):
        for _ in mounts_under(path):
            proc.run(["umount", "-l", str(path)], timeout=60)
    for point in mounts_under(folder / SHARES):
        proc.run(["umount", "-l", point], timeout=60)
    discard(folder / SHARES)  # refuses while anything is still mounted under it
