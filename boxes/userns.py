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


def build_command(argv: list[str], machines_view: bool = False) -> tuple[list[str], dict[str, str]]:
    """The command (and its environment) that runs `vbox ARGV` again in a user namespace:
    the build's, or (`machines_view`) her LXC machines', where a tree she built shows the
    owners it was built with (an export reads it there)."""
    from vbox_cli.paths import vbox_cache, vbox_home

    env = {**os.environ, MARK: "1", "VBOX_HOME": str(vbox_home()), "VBOX_CACHE": str(vbox_cache()),
           # debootstrap then binds /dev's nodes into the tree, which it cannot make here
           "container": "lxc",
           "PATH": f"{os.environ.get('PATH', '/usr/bin:/bin')}:/usr/sbin:/sbin"}
    if machines_view:
        from providers.subids import user_map

        return ["lxc-usernsexec", *user_map().usernsexec_args(), "--", sys.executable, "-m", "vbox_cli", *argv], env
    command = [*UNSHARE, "--mount", "--pid", "--fork", "--mount-proc", "--kill-child",
               sys.executable, "-m", "vbox_cli", *argv]
    return command, env


def run(argv: list[str], machines_view: bool = False) -> int:
    """`vbox ARGV` in the user's namespace, its output on this terminal; its exit status.
    It runs in a process group of its own: ^C or SIGTERM here is passed to it as SIGTERM,
    which it unwinds from (a half-built box removed) while this process waits. (unshare
    ignores both while it waits for its child, and kills that child if it dies first.)"""
    import signal
    import subprocess

    command, env = build_command(argv, machines_view)
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


IMPORTERS = {"vbox": ("boxes.archive", "import_archive"), "vagrant": ("boxes.vagrant", "import_vagrant"),
             "oci": ("boxes.oci", "import_image"), "cloud": ("boxes.cloud", "import_cloud_image")}


def import_box(kind: str, path: Path, store, **options):
    """A box file of `kind` imported into `store` (the importers' own keywords); the Box.
    Root imports directly. A normal user's import runs in her LXC machines' view
    (`machines_view`), where the archive's owners can be given and are those her machines
    see: the box is ready for them, its digest checked as it was made. (Outside, she
    could give its files no owner but herself.) Progress is not reported from there."""
    import importlib
    import json

    from vbox_cli.errors import VboxError

    module, function = IMPORTERS[kind]
    if os.geteuid() == 0:
        return getattr(importlib.import_module(module), function)(path, store, **options)
    from boxes.store import LOCKS, STAGING
    from providers.subids import user_map
    from vbox_cli import proc

    for folder in (store.root, store.root / LOCKS, store.root / STAGING):  # hers, not the namespace root's
        folder.mkdir(parents=True, exist_ok=True)
    options = {k: v for k, v in options.items() if k not in ("progress", "on_phase")}
    payload = {"kind": kind, "path": str(Path(path).resolve()), "store": str(store.root), "options": options}
    result = proc.run(["lxc-usernsexec", *user_map().usernsexec_args(), "--", sys.executable, "-m", "boxes.userns"],
                      input=json.dumps(payload), check=False, timeout=3600)
    lines = result.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise VboxError(f"importing {path} in your user namespace failed", details=result.stderr.strip()) from None
    if "error" in answer:
        raise VboxError(answer["error"], hint=answer.get("hint"))
    box = store.find(*answer["box"])
    if box is None:
        raise VboxError(f"importing {path}: the store has no box {' '.join(answer['box'])} after it")
    return box


def _import_inside(payload: dict) -> dict:
    """import_box's other half, as the root of her machines' namespace."""
    import importlib

    from boxes.store import BoxStore
    from vbox_cli.errors import VboxError

    module, function = IMPORTERS[payload["kind"]]
    store = BoxStore(Path(payload["store"]), shared=[])
    try:
        box = getattr(importlib.import_module(module), function)(Path(payload["path"]), store, **payload["options"])
        return {"box": [box.name, box.version]}
    except VboxError as exc:
        return {"error": exc.message, "hint": exc.hint}
    finally:
        give_back_store(store.root)


def give_back_store(root: Path) -> None:
    """What this namespace's root made in her store, but the box trees, made hers (her
    metadata, disks, locks: she reads and writes them outside)."""
    from providers.subids import BOX_USER

    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "rootfs"]  # a tree keeps the owners it was given
        for name in [*dirs, *files]:
            path = Path(folder) / name
            info = os.lstat(path)
            if info.st_uid == 0 or info.st_gid == 0:
                os.lchown(path, BOX_USER if info.st_uid == 0 else -1, BOX_USER if info.st_gid == 0 else -1)
    info = os.lstat(root)
    if info.st_uid == 0:
        os.lchown(root, BOX_USER, BOX_USER)


def give_back(*paths: Path) -> None:
    """Files this namespace's root made outside the store (an export's archive) made hers
    (the machines' view: she is its BOX_USER)."""
    from providers.subids import BOX_USER

    for path in paths:
        if path.exists():
            os.chown(path, BOX_USER, BOX_USER)


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


if __name__ == "__main__":  # import_box's other half, in her machines' namespace
    import json

    print(json.dumps(_import_inside(json.load(sys.stdin))))
