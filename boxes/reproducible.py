"""What makes a box build reproducible, besides the recipe's date given to the build as
SOURCE_DATE_EPOCH: the files a build stamps whatever the packages are, left out; the
tree's times clamped to the date; /dev the same whoever built it (device nodes only in the
disk image, made by debugfs); and the ext4 image's inode times set to the date."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from boxes.unpack import DEVICES as UNPACKED_DEVICES  # the nodes a box may have
from vbox_cli import proc
from vbox_cli.errors import VboxError

# Files the build leaves that differ from one build to the next, whatever the packages:
# logs, caches with inode numbers and times in them, backups, apt's locks.
UNSTABLE = ("var/log/**/*", "var/cache/ldconfig/aux-cache", "var/cache/debconf/*-old", "var/lib/dpkg/*-old",
            "etc/*-", "var/lib/systemd/catalog/database", "var/lib/apt/lists/lock", "var/cache/apt/archives/lock",
            "var/lib/dpkg/lock", "var/lib/dpkg/lock-frontend")


def normalize(rootfs: Path, epoch: int) -> None:
    """The same packages give the same tree: what a build stamps is taken out or set to
    the recipe's date, and no file is newer than it."""
    for pattern in UNSTABLE:
        for path in glob.glob(str(rootfs / pattern), recursive=True):
            if os.path.isfile(path) or os.path.islink(path):
                os.unlink(path)
    days = epoch // 86400  # /etc/shadow's "last changed" field, in days
    for name in ("etc/shadow", "etc/gshadow"):
        path = rootfs / name
        if path.is_file():
            lines = []
            for line in path.read_text().splitlines():
                fields = line.split(":")
                if name == "etc/shadow" and len(fields) > 2 and fields[2]:
                    fields[2] = str(days)
                lines.append(":".join(fields))
            mode = path.stat().st_mode
            path.write_text("\n".join(lines) + "\n")
            os.chmod(path, mode & 0o7777)
    for name in ("proc", "sys"):  # mount points: what happened to them in the build is no content
        if (rootfs / name).is_dir() and not (rootfs / name).is_symlink():
            os.utime(rootfs / name, (epoch, epoch), follow_symlinks=False)
    for root, dirs, files in os.walk(rootfs):
        for name in dirs + files:
            _clamp(os.path.join(root, name), epoch)
    _clamp(str(rootfs), epoch)


def _clamp(path: str, epoch: int) -> None:
    info = os.lstat(path)
    if info.st_mtime > epoch or info.st_atime > epoch:
        os.utime(path, (min(info.st_atime, epoch), min(info.st_mtime, epoch)), follow_symlinks=False)


# The tree's /dev: what can be made without root (a build in a user namespace cannot make a
# device node; root's debootstrap makes them). The disk image gets DEVICES as well, for a
# kernel that boots without an initrd to find its console before devtmpfs is mounted;
# machines mount their own /dev over it (devtmpfs in a VM, LXC's autodev in a container).
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
             "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}
DEV_DIRS = ("pts", "shm")
DEVICES = tuple((name, major, minor, mode) for name, (_, major, minor, mode) in UNPACKED_DEVICES.items()
                if name not in DEV_LINKS)


def reset_dev(rootfs: Path) -> None:
    """The tree's /dev made the same in every build: DEV_DIRS and DEV_LINKS, nothing else
    (debootstrap leaves nodes as root, files it binds nodes onto in a user namespace)."""
    import shutil

    dev = rootfs / "dev"
    for entry in os.scandir(dev) if dev.is_dir() else ():
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
    dev.mkdir(mode=0o755, exist_ok=True)
    os.chmod(dev, 0o755)
    for name in DEV_DIRS:
        (dev / name).mkdir(mode=0o755)
        os.chmod(dev / name, 0o755)
    for name, target in DEV_LINKS.items():
        (dev / name).symlink_to(target)


def _device_commands(epoch: int) -> list[str]:
    """debugfs commands that make DEVICES in the image's /dev, root's, stamped `epoch`."""
    commands = ["cd /dev"]
    for name, major, minor, mode in DEVICES:
        commands += [f"mknod {name} c {major} {minor}", f"sif {name} mode 0{0o20000 | mode:o}"]
        commands += [f"sif {name} {field} @{epoch}" for field in ("mtime", "ctime", "atime", "crtime")]
    return [*commands, "cd /", f"sif /dev mtime @{epoch}"]


def set_times(rootfs: Path, image: Path, epoch: int, env: dict[str, str]) -> None:
    """DEVICES made in the image, and every inode's change and access times set to `epoch`
    (one debugfs session)."""
    commands = [*_device_commands(epoch), f"sif / ctime @{epoch}", f"sif / atime @{epoch}"]
    for root, dirs, files in os.walk(rootfs):
        for name in sorted(dirs + files):
            relative = "/" + os.path.relpath(os.path.join(root, name), rootfs)
            if any(c in relative for c in '"\n'):
                raise VboxError(f"the box has a file whose name debugfs cannot take: {relative!r}")
            commands += [f'sif "{relative}" ctime @{epoch}', f'sif "{relative}" atime @{epoch}']
    script = image.with_suffix(".debugfs")
    script.write_text("\n".join(commands) + "\n")
    try:
        proc.run(["debugfs", "-w", "-f", str(script), str(image)], env=env, timeout=1800)
    finally:
        script.unlink(missing_ok=True)
