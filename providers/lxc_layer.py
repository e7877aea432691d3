"""An LXC machine's own layer: the overlay's upper folder over the box's tree, where every
change the machine makes is kept. What vbox writes into it (owners copied from the box's
folders, shifted for an unprivileged machine), the disk of its own that `disk` gives it,
and its snapshots.

A machine's folder (`<lxc path>/<container>/`): upper/ (its layer), disk.img and delta/
(its disk, mounted there), snapshots/<name>/{upper/, info.json}.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from providers.lxc_config import CONFIG, UPPER
from vbox_cli import proc
from vbox_cli.errors import CommandError, VboxError

SNAPSHOTS = "snapshots"  # <container>/snapshots/<name>/{upper/, info.json}
DISK_IMAGE = "disk.img"  # a machine with `disk`: its own layer on a file system of that size
LAYER = "delta"  # where that file system is mounted (the overlay's upper and work folders)


def discard(path: Path) -> None:
    from boxes.store import discard as remove

    remove(path)


# -- files vbox writes into the layer ------------------------------------------------------
def make_parents(upper: Path, lower: Path | None, relative: Path, ids=None) -> None:
    """The folders above `relative` made in the upper layer. A folder there hides the
    attributes of the lower one: they are copied (its owners shifted into an unprivileged
    machine's range, `ids`)."""
    current_upper, current_lower = upper, lower
    for part in relative.parent.parts:
        current_upper = current_upper / part
        # the lower folder's attributes, never through a link of the box's tree (it may lead
        # out of the tree, to this host's files)
        current_lower = current_lower / part if current_lower and not current_lower.is_symlink() else None
        # nor through a link the machine made in its layer (its root may have replaced a
        # folder with a link to one of this host's)
        if current_upper.is_symlink() or (current_upper.exists() and not current_upper.is_dir()):
            raise VboxError(f"the machine's /{current_upper.relative_to(upper)} is not a folder: vbox does not "
                            f"write its /{relative} through it",
                            hint="make it a folder again in the machine, or `env destroy` and `env up` it")
        if current_upper.exists():
            continue
        current_upper.mkdir()
        if current_lower is not None and not current_lower.is_symlink() and current_lower.is_dir():
            st = current_lower.stat()
            os.chown(current_upper, *shift(ids, st.st_uid, st.st_gid))
            os.chmod(current_upper, st.st_mode & 0o7777)
        else:
            os.chown(current_upper, *shift(ids, 0, 0))
            os.chmod(current_upper, 0o755)


def shift(ids, uid: int, gid: int) -> tuple[int, int]:
    """The host's ids of a machine's (uid, gid): the same in a privileged machine."""
    return ids.shift(uid, gid) if ids else (uid, gid)


def write_files(upper: Path, lower: Path | None, files: dict, ids, owner_ids: Callable[[str], tuple[int, int]],
                durable: bool = True) -> None:
    """Files {relative path: (content, mode, owner)} written into the layer, each with its
    folders; owners are the machine's (`owner_ids` of its name), shifted by `ids`.
    `durable`: synced to disk (a new machine's need not be: one cut short is made anew)."""
    from vbox_cli.files import atomic_write

    for relative, (content, mode, owner) in files.items():
        make_parents(upper, lower, Path(relative), ids)
        atomic_write(upper / relative, content, mode, durable=durable)
        os.chown(upper / relative, *shift(ids, *owner_ids(owner)))


def plain_folder(root: Path, relative: str) -> bool:
    """Whether `relative` is a folder under `root` through folders only: no link of the
    machine's on the way (one would lead to this host's files)."""
    import stat

    current = root
    for part in Path(relative).parts:
        current = current / part
        try:
            if not stat.S_ISDIR(os.lstat(current).st_mode):
                return False
        except OSError:
            return False
    return True


def unmask_unit(upper: Path, unit: str) -> None:
    """A unit mask_unit masked in the layer unmasked: its link to /dev/null removed (only
    that link, found through folders only)."""
    link = upper / "etc/systemd/system" / unit
    if plain_folder(upper, "etc/systemd/system") and link.is_symlink() and os.readlink(link) == "/dev/null":
        link.unlink()


def mask_unit(upper: Path, lower: Path | None, unit: str, ids=None) -> None:
    """A systemd unit of the box masked in the layer (a link to /dev/null): one that would
    fail at every boot, as debugfs's mount in a user namespace."""
    units = upper / "etc/systemd/system"
    make_parents(upper, lower, Path("etc/systemd/system/x"), ids)
    (units / unit).unlink(missing_ok=True)
    (units / unit).symlink_to("/dev/null")
    os.lchown(units / unit, *shift(ids, 0, 0))


def write_network_files(folder: Path, spec) -> None:
    """networkd's files of the extra networks, in the upper layer of a stopped machine
    (never under a running one's overlay), and networkd masked or not as they need it
    (lxc_config.masked_units)."""
    from providers.lxc_config import NETWORKD_UNITS, machine_ids, masked_units, network_files, user_map_lines

    if user_map_lines(folder):
        return  # a user's machine has no extra network (lxc_user.check_spec)
    upper, lower, ids = folder / UPPER, spec.box.artefact("rootfs"), machine_ids(folder)
    network_dir = upper / "etc/systemd/network"
    # through folders only: the machine's root may have made a link of one (to this host's)
    for old in network_dir.glob("11-vbox-net*.network") if plain_folder(upper, "etc/systemd/network") else ():
        old.unlink()
    write_files(upper, lower, network_files(spec), ids, lambda owner: (0, 0))
    if spec.box.meta.recipe:
        masked = masked_units(spec)
        for unit in NETWORKD_UNITS:
            if unit in masked:
                mask_unit(upper, lower, unit, ids)
            else:
                unmask_unit(upper, unit)


# -- a disk of its own (`disk`): its layer on a file system of that size ---------------------
# `df /` inside shows the size (overlayfs reports its upper layer's file system), writing
# past it fails with ENOSPC inside, and this host's file system is not filled: the image
# is a sparse file. ext4 on a loop device, mounted at delta/ while the machine exists.
def make_disk(folder: Path, size: int) -> None:
    image = folder / DISK_IMAGE
    with open(image, "wb") as f:
        f.truncate(size)
    os.chmod(image, 0o600)
    proc.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1",
              "-L", "vbox-layer", str(image)], timeout=300)
    (folder / LAYER).mkdir()
    mount_disk(folder)


def has_disk(folder: Path) -> bool:
    return (folder / DISK_IMAGE).is_file()


def mount_disk(folder: Path) -> None:
    """Its file system mounted at delta/, if it has one and it is not (a host restart)."""
    image, layer = folder / DISK_IMAGE, folder / LAYER
    if image.is_file() and not os.path.ismount(layer):
        proc.run(["mount", "-o", "loop", str(image), str(layer)], timeout=60)


def disk_usage(folder: Path) -> tuple[int, int] | None:
    """(size, used) of its own disk's file system, mounted; None without one."""
    layer = folder / LAYER
    if not has_disk(folder) or not os.path.ismount(layer):
        return None
    fs = os.statvfs(layer)
    return fs.f_blocks * fs.f_frsize, (fs.f_blocks - fs.f_bfree) * fs.f_frsize


def grow_disk(folder: Path, size: int) -> None:
    """The image made bigger and its mounted file system grown into it, online (the
    kernel asks for CAP_SYS_RESOURCE, which a host in a container may not give)."""
    image = folder / DISK_IMAGE
    if image.stat().st_size < size:
        with open(image, "r+b") as f:
            f.truncate(size)
    device = proc.run(["findmnt", "-no", "SOURCE", str(folder / LAYER)]).stdout.strip()
    proc.run(["losetup", "-c", device])
    proc.run(["resize2fs", device], timeout=300)


def fit_disk(folder: Path, size: int) -> None:
    """Before a start: an image smaller than `disk` grown, and its file system, offline."""
    image, layer = folder / DISK_IMAGE, folder / LAYER
    if not image.is_file() or fs_size(image) >= size:
        return
    if os.path.ismount(layer):
        proc.run(["umount", str(layer)], timeout=60)
    wait_released(image)
    if image.stat().st_size < size:
        with open(image, "r+b") as f:
            f.truncate(size)
    # 1: errors corrected (a journal replayed after a host crash): the file system is whole
    checked = proc.run(["e2fsck", "-f", "-p", str(image)], timeout=600, check=False)
    if checked.returncode not in (0, 1):
        raise CommandError(["e2fsck", "-f", "-p", str(image)], checked.returncode, checked.stdout + checked.stderr,
                           hint=f"the file system of {image} needs a check by hand (e2fsck -f)")
    proc.run(["resize2fs", str(image)], timeout=600)


def attached_loops(image: Path) -> list[str]:
    """The loop devices backed by `image` (the kernel's record of each, in /sys)."""
    target = str(image.resolve())
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            if backing.read_text().rstrip("\n") == target:
                found.append(backing.parent.parent.name)
        except OSError:
            continue  # detached meanwhile
    return found


def wait_released(image: Path, timeout: float = 30) -> None:
    """Until no loop device holds `image`. Its mount here may be gone while the file system
    still lives: a stopped container's mount namespace, which holds the overlay over it,
    is released after lxc-stop returns. A check or resize of it meanwhile would race the
    kernel's own writes (mount -o loop detaches the device when the last user goes)."""
    deadline = time.monotonic() + timeout
    while (loops := attached_loops(image)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if loops:
        raise VboxError(f"{image} is still in use ({', '.join('/dev/' + loop for loop in loops)}) {timeout:g} s "
                        "after its machine stopped", hint=f"see what holds it: losetup -a; lsof /dev/{loops[0]}")


def fs_size(image: Path) -> int:
    """The size of the ext4 file system in an image, from its superblock."""
    fields = dict(line.split(":", 1) for line in proc.run(["dumpe2fs", "-h", str(image)]).stdout.splitlines()
                  if ":" in line)
    return int(fields["Block count"]) * int(fields["Block size"])


# -- snapshots ---------------------------------------------------------------------------
# A snapshot is a copy of the overlay's upper layer (the machine's own changes; the box
# below never changes), made with reflinks where the file system has them. A running
# container is frozen for the copy, so that no process changes a file half-way.
def copy_tree(source: Path, target: Path, folder: Path) -> None:
    """A copy of an overlay layer with everything overlayfs keeps in it (owners, modes,
    whiteouts, the xattrs of opaque folders); reflinked where the file system can. A
    user's machine's (in `folder`), from her user namespace: its files are of her
    subordinate ids (providers/lxc_user.py)."""
    from providers.lxc_config import user_map_lines

    argv = ["cp", "-a", "--reflink=auto", "--", str(source), str(target)]
    if user_map_lines(folder):
        from providers.lxc_user import inside
        from providers.subids import user_map

        inside(user_map(), argv, timeout=3600)
    else:
        proc.run(argv, timeout=3600)


def snapshots(folder: Path):
    from providers.base import Snapshot

    found = []
    where = folder / SNAPSHOTS
    for entry in sorted(where.iterdir()) if where.is_dir() else ():
        try:
            info = json.loads((entry / "info.json").read_text())
            found.append(Snapshot(entry.name, float(info["created"]), bool(info["running"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a save cut short (it never got its info), or an info that is not vbox's
    return sorted(found, key=lambda snap: snap.created)


def save_snapshot(folder: Path, name: str, frozen: Callable[[], AbstractContextManager[bool]]):
    """A copy of the layer as snapshot `name`, made while `frozen()` holds (it says whether
    the machine runs: a stopped one is not frozen)."""
    from providers.base import Snapshot, check_snapshot_name
    from vbox_cli.files import atomic_write

    check_snapshot_name(name)
    target = folder / SNAPSHOTS / name
    if target.exists():
        raise VboxError(f"{folder.name} has a snapshot named {name} already")
    mount_disk(folder)
    partial = folder / SNAPSHOTS / f".{name}.partial"
    discard(partial)
    partial.mkdir(parents=True)
    try:
        with frozen() as running:
            created = time.time()
            copy_tree(folder / UPPER, partial / "upper", folder)
        atomic_write(partial / "info.json", json.dumps({"created": created, "running": running}) + "\n", 0o600)
        partial.rename(target)
    finally:
        discard(partial)
    return Snapshot(name, created, running)


def restore_snapshot(folder: Path, name: str) -> None:
    """The upper layer replaced by a copy of the snapshot's (which stays), in a stopped
    machine; the new one is made beside it first, so that a restore cut short leaves the
    old layer or the new one whole (`settle` finishes it)."""
    source = folder / SNAPSHOTS / name / "upper"
    if not (folder / SNAPSHOTS / name / "info.json").is_file():
        raise VboxError(f"{folder.name} has no snapshot named {name}")
    upper = folder / UPPER
    fresh, old = upper.with_name("upper.new"), upper.with_name("upper.old")
    mount_disk(folder)
    settle(folder, restoring=True)
    discard(fresh)
    if has_disk(folder) and upper.exists():  # its disk may not hold two layers: the old one goes first
        upper.rename(old)
        discard(old)
    copy_tree(source, fresh, folder)
    if upper.exists():
        upper.rename(old)
    fresh.rename(upper)
    discard(old)


def delete_snapshot(folder: Path, name: str) -> None:
    target = folder / SNAPSHOTS / name
    if not (target / "info.json").is_file():
        raise VboxError(f"{folder.name} has no snapshot named {name}")
    discard(target)


def settle(folder: Path, restoring: bool = False) -> None:
    """Finish a restore that was cut short: the new layer whole, or the old one. With
    neither (a machine with its own disk, cut short while it copied the new one), only a
    restore (`restoring`) goes on."""
    upper = folder / UPPER
    fresh, old = upper.with_name("upper.new"), upper.with_name("upper.old")
    if not upper.exists() and old.exists():
        (fresh if fresh.exists() else old).rename(upper)
    if not upper.exists() and (folder / CONFIG).is_file() and not restoring:
        raise VboxError(f"{folder.name}: its layer was being restored from a snapshot when vbox stopped",
                        hint="`env snapshot restore MACHINE NAME` again")
    discard(old)
    discard(fresh)
